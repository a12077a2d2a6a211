"""deploy/redis/ run for real (issue 13, the docker-compose item): the primary, the replica and
three sentinels of docker-compose.sentinel.yml, from their own config files, on the embedded
redis-server (flashwire.dev.redis_server), started the way the containers start them (a writable
copy of the file; `--sentinel announce-ip NAME` on a sentinel's command line).

What only Docker provides is replaced: each service name by `localhost` (a name, so the
hostname settings are exercised as they are in Compose), each port by a free one, `dir` by a
temporary directory; each replacement is checked to happen. Then the primary is SIGKILLed and the
sentinels promote the replica within down-after-milliseconds and a few seconds, handing out its
name, not an address."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import redis_server_binary
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "redis"
HOST = "localhost"
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")


def replaced(text: str, old: str, new: str, count: int = 1) -> str:
    """`text` with `old` replaced; fails unless it occurs exactly `count` times."""
    assert text.count(old) == count, f"expected {old!r} {count} time(s) in a deploy/redis file"
    return text.replace(old, new)


@dataclass
class Server:
    """One redis-server process (a data node or a sentinel) started from a deploy/redis file."""

    name: str
    port: int
    conf: Path
    process: subprocess.Popen[bytes]

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, decode_responses=True)


def localized(text: str, directory: Path, ports: dict[str, int], own: str) -> str:
    """A deploy/redis file for this machine: `own`'s port and directory; names and ports of the
    data nodes it refers to (redis:6379) made local."""
    text = replaced(
        text, "port 6379\n" if own.startswith("redis") else "port 26379\n", f"port {ports[own]}\n"
    )
    text = replaced(text, "dir /data\n", f"dir {directory}\n")
    if own.startswith("redis"):
        text = replaced(text, f"replica-announce-ip {own}\n", f"replica-announce-ip {HOST}\n")
    if own == "redis-replica":
        text = replaced(text, "replicaof redis 6379\n", f"replicaof {HOST} {ports['redis']}\n")
    if own.startswith("sentinel"):
        text = replaced(
            text, "monitor flashwire redis 6379 2", f"monitor flashwire {HOST} {ports['redis']} 2"
        )
    return text


def start(name: str, source: str, tmp_path: Path, ports: dict[str, int]) -> Server:
    directory = tmp_path / name
    directory.mkdir()
    conf = directory / ("sentinel.conf" if name.startswith("sentinel") else "redis.conf")
    conf.write_text(localized((DEPLOY / source).read_text(), directory, ports, name))
    args = [redis_server_binary(), str(conf), "--bind", "127.0.0.1", "--logfile", str(directory / "log")]
    if name.startswith("sentinel"):
        args += ["--sentinel", "announce-ip", HOST]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    return Server(name, ports[name], conf, process)


@asynccontextmanager
async def topology(tmp_path: Path) -> AsyncIterator[dict[str, Server]]:
    """The five servers, once each answers PING; all stopped (SIGKILL) at the end."""
    ports = {name: free_port() for name in ("redis", "redis-replica", *SENTINELS)}
    servers: dict[str, Server] = {}
    try:
        servers["redis"] = start("redis", "primary.conf", tmp_path, ports)
        servers["redis-replica"] = start("redis-replica", "replica.conf", tmp_path, ports)
        for name in SENTINELS:
            servers[name] = start(name, "sentinel.conf", tmp_path, ports)
        for server in servers.values():
            client = server.client()
            try:
                async with asyncio.timeout(10):
                    while True:
                        assert server.process.poll() is None, (server.conf.parent / "log").read_text()
                        try:
                            if await client.ping():
                                break
                        except (OSError, RedisConnectionError):  # not listening yet
                            await asyncio.sleep(0.05)
            finally:
                await client.aclose()
        yield servers
    finally:
        for server in servers.values():
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()


@pytest.mark.slow
async def test_deploy_redis_files_fail_over_by_name(tmp_path: Path) -> None:
    """The files load on a real server; the servers require a replica for writes; the sentinels find
    each other and the replica under its name; after the primary is SIGKILLed they promote the
    replica, hand out its name and port, and the replica's own file records its new role."""
    async with topology(tmp_path) as servers:
        primary, replica, sentinel = (
            servers["redis"].client(),
            servers["redis-replica"].client(),
            servers["sentinel-1"].client(),
        )
        try:
            for node in (primary, replica):
                assert await node.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}
            # Sentinels discover the replica (from the primary) and one another (over its hello channel).
            deadline = time.monotonic() + 15
            while True:
                master = await sentinel.sentinel_master("flashwire")
                replicas = await sentinel.sentinel_slaves("flashwire")
                if master["num-slaves"] == 1 and master["num-other-sentinels"] == 2 and replicas:
                    break
                assert time.monotonic() < deadline, (master, replicas)
                await asyncio.sleep(0.1)
            assert (replicas[0]["ip"], replicas[0]["port"]) == (HOST, servers["redis-replica"].port)
            sentinels = await sentinel.sentinel_sentinels("flashwire")
            assert {entry["ip"] for entry in sentinels} == {HOST}
            # The primary takes writes once its replica is in sync and acknowledging
            # (min-replicas-to-write 1): NOREPLICAS until then, which a loaded machine can stretch.
            while True:
                try:
                    assert await primary.set("acknowledged", "1")
                    break
                except ResponseError as exc:
                    assert "NOREPLICAS" in str(exc) and time.monotonic() < deadline, exc
                    await asyncio.sleep(0.1)

            killed_at = time.monotonic()
            servers["redis"].process.send_signal(signal.SIGKILL)
            servers["redis"].process.wait()
            while True:
                address = await sentinel.sentinel_get_master_addr_by_name("flashwire")
                if address == (HOST, servers["redis-replica"].port):
                    break
                assert time.monotonic() - killed_at < 20, address
                await asyncio.sleep(0.1)
            print(f"replica promoted {time.monotonic() - killed_at:.1f} s after the primary was killed")
            assert (await replica.execute_command("ROLE"))[0] == "master"
            assert await replica.get("acknowledged") == "1"
            # Sentinel rewrote the replica's file (CONFIG REWRITE): restarted, it stays the primary.
            deadline = time.monotonic() + 5
            while re.search(r"^replicaof ", servers["redis-replica"].conf.read_text(), re.MULTILINE):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            for client in (primary, replica, sentinel):
                await client.aclose()
