"""What WAIT before 201 closes: an acknowledged post that a failover can lose (issue 13, must-show 2).

A primary and one replica (tests/redis_sentinel.py), the service in this process on the primary.
The replica is frozen (SIGSTOP: connected, answering nothing), a line is posted, the primary is
SIGKILLed and the replica promoted by hand (what a sentinel would do): whatever the replica had
not received is gone. Without WAIT that post was answered 201; with FLASHWIRE_WAIT_REPLICAS=1 it
is answered 202, never 201, so no acknowledged post is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from tests.conftest import auth, serve_in_process
from tests.redis_sentinel import Replicated

KEYS = Keys("fw")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Replicated]:
    """A primary and one replica, no sentinels; killed after the test."""
    topology = Replicated(tmp_path, sentinels=False)
    yield topology
    topology.close()


async def _lines_on(port: int) -> set[str]:
    """The line ids a server's desk index holds."""
    redis = Redis(port=port)
    try:
        return {key.decode() for key in await redis.hkeys(KEYS.line_index)}
    finally:
        await redis.aclose()


def _cut_off_replica(pair: Replicated) -> None:
    """Freeze the replica (SIGSTOP) and drop its link, so nothing written from now reaches it: a
    frozen process alone still receives into its socket buffer, and would read it once thawed."""
    pair.replicas[0].freeze()
    assert pair.primary.command("CLIENT", "KILL", "TYPE", "replica").startswith(b":1")


def _promote_replica(pair: Replicated) -> int:
    """Lose the primary and promote the replica, as a failover does; the new primary's port."""
    replica = pair.replicas[0]
    pair.primary.kill()
    replica.thaw()
    assert replica.command("REPLICAOF", "NO", "ONE").startswith(b"+OK")
    return replica.port


async def _post(client: Any, token: str, text: str, **headers: str) -> Any:
    return await client.post(
        "/api/v1/lines", json={"edition": "en", "text": text}, headers={**auth(token), **headers}
    )


async def test_without_wait_an_acknowledged_post_is_lost_with_the_primary(pair: Replicated) -> None:
    """WAIT off: a post the replica never received is answered 201 all the same, and is gone once
    the replica is promoted. This is the window FLASHWIRE_WAIT_REPLICAS closes."""
    async with serve_in_process(pair.primary, FLASHWIRE_WAIT_REPLICAS="0") as app:  # type: ignore[arg-type]
        token = await app.token()
        safe = await _post(app.client, token, "Replicated before the freeze")
        assert safe.status_code == 201 and "replicas" not in safe.json()
        await asyncio.sleep(0.2)  # replication is asynchronous: give it its moment
        _cut_off_replica(pair)
        risky = await _post(app.client, token, "Posted while the replica is frozen")
        assert risky.status_code == 201, risky.text
    new_primary = _promote_replica(pair)
    lines = await _lines_on(new_primary)
    assert safe.json()["id"] in lines
    assert risky.json()["id"] not in lines, "the acknowledged post survived: the window was not shown"


async def test_with_wait_a_post_not_on_a_replica_is_answered_202_never_201(pair: Replicated) -> None:
    """WAIT=1: with the replica healthy a post is 201 (acknowledged 1 of 1); with it frozen the post
    is 202 (0 of 1) and a retry under the same Idempotency-Key once it has caught up is 201 from a new
    WAIT. A post lost with the primary was therefore never a 201."""
    env = {"FLASHWIRE_WAIT_REPLICAS": "1", "FLASHWIRE_WAIT_TIMEOUT_MS": "300"}
    async with serve_in_process(pair.primary, **env) as app:  # type: ignore[arg-type]
        token = await app.token()
        safe = await _post(app.client, token, "On the replica before the answer")
        assert safe.status_code == 201, safe.text
        assert safe.json()["replicas"] == {"acknowledged": 1, "required": 1}

        _cut_off_replica(pair)
        unsafe = await _post(app.client, token, "Not yet on a replica", **{"Idempotency-Key": "k-202"})
        assert unsafe.status_code == 202, unsafe.text
        assert unsafe.json()["replicas"] == {"acknowledged": 0, "required": 1}

        pair.replicas[0].thaw()
        pair.wait_replicated()
        again = await _post(app.client, token, "Not yet on a replica", **{"Idempotency-Key": "k-202"})
        assert again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == unsafe.json()["id"]
        assert again.json()["replicas"] == {"acknowledged": 1, "required": 1}
        _cut_off_replica(pair)
        lost = await _post(app.client, token, "Lost with the primary")
        assert lost.status_code == 202, lost.text
    new_primary = _promote_replica(pair)
    lines = await _lines_on(new_primary)
    assert {safe.json()["id"], unsafe.json()["id"]} <= lines
    assert lost.json()["id"] not in lines  # lost, but it was answered 202, not 201


async def test_a_primary_without_its_replicas_refuses_with_503_and_records_nothing(pair: Replicated) -> None:
    """min-replicas-to-write 1 on the primary and the replica frozen past min-replicas-max-lag: the
    post is 503 with Retry-After and the desk stream is unchanged (NOREPLICAS)."""
    pair.primary.command("CONFIG", "SET", "min-replicas-to-write", "1")
    pair.primary.command("CONFIG", "SET", "min-replicas-max-lag", "1")
    async with serve_in_process(pair.primary, FLASHWIRE_WAIT_REPLICAS="1") as app:  # type: ignore[arg-type]
        token = await app.token()
        redis = app.redis()
        try:
            pair.replicas[0].freeze()
            for _ in range(40):  # the replica's last ACK must age past the 1 s lag: 2-3 s
                refused = await _post(app.client, token, "No replica to take it")
                if refused.status_code == 503:
                    break
                await asyncio.sleep(0.1)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            # Refused by the rate limit's counting script or the desk's: both fail at their first write.
            desk, lines = await redis.xlen(KEYS.desk), await redis.hlen(KEYS.line_index)
            refused_again = await _post(app.client, token, "Still no replica")
            assert refused_again.status_code == 503
            assert (await redis.xlen(KEYS.desk), await redis.hlen(KEYS.line_index)) == (desk, lines)
        finally:
            pair.replicas[0].thaw()
            await redis.aclose()
