"""The rules docker-compose.yml and docker-compose.sentinel.yml keep, read from the files (no
Docker needed): one image built once, pinned Redis, the balancer's addresses and the Sentinel
settings consistent with deploy/ and with docs/configuration.md (issue 13, the docker-compose
item). tests/test_deploy_balancer.py runs the balancer's config; tests/test_deploy_sentinel.py
runs deploy/redis/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

BASE = ROOT / "docker-compose.yml"
SENTINEL = ROOT / "docker-compose.sentinel.yml"
DEPLOY = ROOT / "deploy"
PINNED_REDIS = re.compile(r"^redis:\d+\.\d+\.\d+$")


def services(path: Path) -> dict[str, dict[str, Any]]:
    """The file's services, YAML anchors and merge keys resolved as Compose resolves them."""
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(path.read_text())["services"]
    return loaded


def merged() -> dict[str, dict[str, Any]]:
    """The services of `-f docker-compose.yml -f docker-compose.sentinel.yml`, as far as these
    tests need: a later file's mappings (environment, depends_on) merged key by key, its other
    values replacing the first file's."""
    result = {name: dict(service) for name, service in services(BASE).items()}
    for name, override in services(SENTINEL).items():
        service = result.setdefault(name, {})
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(service.get(key), dict):
                service[key] = {**service[key], **value}
            else:
                service[key] = value
    return result


def is_flashwire(service: dict[str, Any]) -> bool:
    return str(service.get("command", [""])[0]) == "flashwire"


def test_one_image_built_once() -> None:
    """Only one service builds; every Flashwire service runs that image's tag and never pulls it
    (the tag exists only on this machine)."""
    assert [name for name, service in services(BASE).items() if "build" in service] == ["worker"]
    everything = merged()
    assert [name for name, service in everything.items() if "build" in service] == ["worker"]
    built = everything["worker"]["image"]
    flashwire = {name: service for name, service in everything.items() if is_flashwire(service)}
    assert set(flashwire) == {"worker", "service-1", "service-2"}
    for name, service in flashwire.items():
        assert service["image"] == built, name
        assert service["pull_policy"] == "never", name


def test_redis_images_pinned_and_the_same() -> None:
    everything = merged()
    redis = {name: service["image"] for name, service in everything.items() if "redis" in service["image"]}
    assert set(redis) == {"redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert len(set(redis.values())) == 1, redis
    assert PINNED_REDIS.match(next(iter(redis.values()))), redis
    assert PINNED_REDIS.match(services(BASE)["redis"]["image"])


def test_balancer_addresses() -> None:
    """The balancer passes to the nodes by their service names and port, publishes the port it binds,
    and is the one proxy the nodes trust (its fixed address)."""
    base = services(BASE)
    balancer = base["balancer"]
    config = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    nodes = sorted(name for name, service in base.items() if service.get("command", [""])[1:2] == ["serve"])
    assert nodes == ["service-1", "service-2"]
    servers = re.findall(r"^\s*server (\S+) (\S+)", config, re.MULTILINE)
    assert servers == [(name, f"{name}:8000") for name in nodes]
    assert re.search(r"^\s*bind :8080$", config, re.MULTILINE)
    assert balancer["ports"] == ["8000:8080"]
    assert "./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    address = balancer["networks"]["default"]["ipv4_address"]
    for name in ("worker", *nodes):
        assert base[name]["environment"]["FLASHWIRE_TRUSTED_PROXIES"] == address, name


def test_sentinel_settings_match_deploy_files() -> None:
    """The Flashwire services name the three sentinels and the master that deploy/redis/sentinel.conf
    monitors; every server announces its service name (the Docker trap: container addresses); both
    servers refuse writes without a replica."""
    everything = merged()
    sentinel_conf = (DEPLOY / "redis" / "sentinel.conf").read_text()
    monitor = re.search(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", sentinel_conf, re.MULTILINE)
    assert monitor is not None
    master, host, port, quorum = monitor.groups()
    assert (host, port, quorum) == ("redis", "6379", "2")
    sentinels = sorted(name for name in everything if name.startswith("sentinel-"))
    assert sentinels == ["sentinel-1", "sentinel-2", "sentinel-3"]
    for name in ("worker", "service-1", "service-2"):
        environment = everything[name]["environment"]
        assert environment["FLASHWIRE_REDIS_SENTINEL_MASTER"] == master
        assert environment["FLASHWIRE_REDIS_SENTINELS"].split(",") == [f"{s}:26379" for s in sentinels]
        assert environment["FLASHWIRE_WAIT_REPLICAS"] == "1"
        assert set(sentinels) <= set(everything[name]["depends_on"])
    for name in sentinels:
        assert everything[name]["environment"]["ANNOUNCE"] == name
        assert '--sentinel announce-ip "$$ANNOUNCE"' in everything[name]["command"][-1]
    for line in ("sentinel resolve-hostnames yes", "sentinel announce-hostnames yes"):
        assert re.search(rf"^{line}$", sentinel_conf, re.MULTILINE), line
    for name, conf in (("redis", "primary.conf"), ("redis-replica", "replica.conf")):
        text = (DEPLOY / "redis" / conf).read_text()
        assert re.search(rf"^replica-announce-ip {name}$", text, re.MULTILINE), conf
        assert re.search(r"^min-replicas-to-write 1$", text, re.MULTILINE), conf
        assert re.search(r"^min-replicas-max-lag \d+$", text, re.MULTILINE), conf
        assert f"./deploy/redis/{conf}:/etc/flashwire/redis.conf:ro" in everything[name]["volumes"]


def test_settings_are_the_documented_ones() -> None:
    """Every variable the Flashwire services are given is a setting of docs/configuration.md, under
    exactly that name (the Sentinel ones included)."""
    documented = set(
        re.findall(r"^\| `([A-Z0-9_]+)` \|", (ROOT / "docs" / "configuration.md").read_text(), re.M)
    )
    given = {
        variable
        for service in merged().values()
        if is_flashwire(service)
        for variable in service["environment"]
    }
    assert {
        "FLASHWIRE_REDIS_SENTINELS",
        "FLASHWIRE_REDIS_SENTINEL_MASTER",
        "FLASHWIRE_WAIT_REPLICAS",
    } <= given
    assert given - documented == set()
