"""Redis Sentinel: the settings, and clients that follow the primary when it moves.

Real processes (tests/redis_sentinel.py): a primary, a replica and three quick sentinels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from flashwire.core.redis_connect import RedisConnector
from flashwire.core.settings import Settings, SettingsError
from tests.redis_sentinel import Replicated


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    """A primary, one replica and three sentinels, killed after the test."""
    topology = Replicated(tmp_path)
    yield topology
    topology.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLASHWIRE_REDIS_SENTINELS": "127.0.0.1:26379"}, "FLASHWIRE_REDIS_SENTINEL_MASTER is not"),
        ({"FLASHWIRE_REDIS_SENTINEL_MASTER": "fw"}, "FLASHWIRE_REDIS_SENTINELS is not"),
        (
            {"FLASHWIRE_REDIS_SENTINELS": "127.0.0.1", "FLASHWIRE_REDIS_SENTINEL_MASTER": "fw"},
            "host:port entries",
        ),
        (
            {"FLASHWIRE_REDIS_SENTINELS": "a:1,b:99999", "FLASHWIRE_REDIS_SENTINEL_MASTER": "fw"},
            "'b:99999'",
        ),
        ({"FLASHWIRE_WAIT_TIMEOUT_MS": "0"}, "FLASHWIRE_WAIT_TIMEOUT_MS must be >= 1"),
        (
            {"FLASHWIRE_REDIS_READ_FROM_REPLICAS": "1"},
            "needs FLASHWIRE_REDIS_SENTINELS .* or FLASHWIRE_REDIS_REPLICA_URL",
        ),
        ({"FLASHWIRE_REDIS_REPLICA_URL": "redis://r:6380/0"}, "FLASHWIRE_REDIS_READ_FROM_REPLICAS is off"),
        (
            {"FLASHWIRE_REDIS_READ_FROM_REPLICAS": "1", "FLASHWIRE_REDIS_REPLICA_URL": "r:6380"},
            "must be redis://",
        ),
        (
            {
                "FLASHWIRE_REDIS_SENTINELS": "a:1",
                "FLASHWIRE_REDIS_SENTINEL_MASTER": "fw",
                "FLASHWIRE_REDIS_READ_FROM_REPLICAS": "1",
                "FLASHWIRE_REDIS_REPLICA_URL": "redis://r:6380/0",
            },
            "without Sentinel",
        ),
    ],
)
def test_bad_sentinel_settings_are_refused(env: dict[str, str], message: str) -> None:
    """Sentinels need a master name (and the reverse); each address is host:port."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_sentinel_settings_are_read() -> None:
    """Addresses become (host, port) pairs, IPv6 brackets removed."""
    settings = Settings.from_env(
        {"FLASHWIRE_REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380", "FLASHWIRE_REDIS_SENTINEL_MASTER": "fw"}
    )
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert settings.redis_sentinel_master == "fw"


async def test_a_client_follows_the_primary_to_the_promoted_replica(replicated: Replicated) -> None:
    """SIGKILL the primary: the connector's client writes again, on the replica the sentinels promoted,
    with no new client made; what was replicated before the kill is there."""
    # REDIS_URL names the first primary: only its db/credentials may count, never its address.
    connector = RedisConnector(Settings.from_env({**replicated.env(), "REDIS_URL": replicated.primary.url}))
    redis = connector.primary(Redis)
    try:
        await redis.set("before", "1")
        assert await redis.wait(1, 1000) == 1
        old_port = replicated.primary.port
        replicated.primary.kill()
        started = time.monotonic()
        while True:
            try:
                await redis.set("after", "1")
                break
            except RedisConnectionError:
                assert time.monotonic() - started < 15, "no primary within 15 s"
                await asyncio.sleep(0.1)
        assert replicated.master_port() == replicated.replicas[0].port != old_port
        info = await redis.info("server")
        assert info["tcp_port"] == replicated.replicas[0].port
        assert await redis.get("before") == b"1"
    finally:
        await connector.aclose()
