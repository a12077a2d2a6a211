"""Redis Sentinel: the settings, and clients that follow the primary when it moves.

Real processes (tests/redis_sentinel.py): a primary, a replica and three quick sentinels.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from flashwire.core.keys import Keys
from flashwire.core.redis_connect import RedisConnector
from flashwire.core.settings import Settings, SettingsError
from flashwire.service.desk import NODE_KEY_TTL_S
from tests.conftest import auth, serve_in_process
from tests.redis_sentinel import Replicated

KEYS = Keys("fw")


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


async def test_desk_writes_ride_out_a_failover_without_503_or_a_double_append(replicated: Replicated) -> None:
    """Posts without an Idempotency-Key sent while the primary is SIGKILLed are each answered 201/202
    (the node runs the request again until the new primary takes it, service/write_retry.py), never
    503, and each is in the new primary's desk stream exactly once (the node's own key)."""
    env = {**replicated.env(), "FLASHWIRE_WAIT_REPLICAS": "1", "FLASHWIRE_WAIT_TIMEOUT_MS": "100"}
    async with serve_in_process(replicated.primary, **env) as app:  # type: ignore[arg-type]
        token = await app.token()
        answers: list[tuple[int, str]] = []

        async def poster(name: str) -> None:
            for number in range(12):
                response = await app.client.post(
                    "/api/v1/lines", json={"edition": "en", "text": f"{name} {number}"}, headers=auth(token)
                )
                answers.append((response.status_code, response.text))
                await asyncio.sleep(0.2)

        posting = [asyncio.create_task(poster(f"poster {i}")) for i in range(2)]
        await asyncio.sleep(0.5)
        replicated.primary.kill()
        await asyncio.gather(*posting)
    assert {status for status, _ in answers} <= {201, 202}, [a for a in answers if a[0] not in (201, 202)]
    new_primary = Redis(port=replicated.replicas[0].port)
    try:
        entries = await new_primary.xrange(KEYS.desk)
        posted = [orjson.loads(fields[b"a"])["id"] for _, fields in entries]
        ids = [orjson.loads(text)["id"] for _, text in answers]
        assert sorted(posted) == sorted(ids)  # every answered post once, none twice
        node_keys = [key async for key in new_primary.scan_iter(match=KEYS.idempotency("node", "*"))]
        assert node_keys and 0 < await new_primary.ttl(node_keys[0]) <= NODE_KEY_TTL_S
    finally:
        await new_primary.aclose()
