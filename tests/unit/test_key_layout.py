"""flashwire.core.key_layout: a deployment's data in the untagged layout moves to the hash-tagged
one with `flashwire migrate-keys`, keeping streams' groups and keys' TTLs, and nodes refuse to start
beside it until then (against a private redis-server)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from redis.asyncio import Redis

from flashwire.core.key_layout import OldKeyLayout, migrate_key_layout, new_name, refuse_old_layout
from flashwire.core.keys import Keys
from flashwire.dev.redis_server import RedisProcess

KEYS = Keys("fw")


def test_every_key_of_the_old_layout_maps_to_the_name_keys_py_gives_it() -> None:
    """Old name (the pre-Cluster `fw:<rest>`) -> Keys' name now, for one key of every family."""
    samples = {
        "fw:desk": KEYS.desk,
        "fw:desk:applied": KEYS.desk_applied,
        "fw:ticker:en": KEYS.ticker("en"),
        "fw:ticker-origin:en": KEYS.ticker_origin("en"),
        "fw:line:en-1": KEYS.line("en-1"),
        "fw:lines": KEYS.line_index,
        "fw:history:en-1": KEYS.history("en-1"),
        "fw:revisions": KEYS.revisions,
        "fw:live:en": KEYS.live("en"),
        "fw:scheduled:en": KEYS.scheduled("en"),
        "fw:killed:en": KEYS.killed("en"),
        "fw:audit": KEYS.audit,
        "fw:expiry": KEYS.expiry,
        "fw:idem:t1:k": KEYS.idempotency("t1", "k"),
        "fw:epoch": KEYS.epoch,
        "fw:workers": KEYS.workers,
        "fw:push:running": KEYS.push_running,
        "fw:push:reg:r1": KEYS.push_registration("r1"),
        "fw:push:targets:en:flash": KEYS.push_targets("en", "flash"),
        "fw:push:client:10.0.0.1": KEYS.push_client("10.0.0.1"),
        "fw:wh:endpoints": KEYS.webhook_endpoints,
        "fw:wh:log:ep_1": KEYS.webhook_log("ep_1"),
        "fw:wh:state:ep_1": KEYS.webhook_state("ep_1"),
        "fw:wh:delivery:ep_1:1-0": KEYS.webhook_delivery("ep_1", "1-0"),
        "fw:wh:dispatched:en": KEYS.webhook_dispatched("en"),
    }
    assert {old: new_name(KEYS, old) for old in samples} == samples
    unchanged = [KEYS.reach("en-1"), KEYS.tokens, KEYS.push_sent("en-1"), KEYS.arq_queue, KEYS.readers("n1")]
    assert [new_name(KEYS, key) for key in unchanged] == [None] * len(unchanged)


async def test_migration_renames_old_keys_keeps_groups_and_ttls_and_reports_conflicts(
    redis_server: RedisProcess,
) -> None:
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.xadd("fw:desk", {"a": "x"})
        await redis.xgroup_create("fw:desk", KEYS.desk_group, id="0")
        await redis.set("fw:line:en-1", "{}", ex=3600)
        await redis.set("fw:push:reg:r1", "{}")
        await redis.set("fw:tokens", "kept")  # a family whose name did not change
        await redis.set("fw:epoch", "old")
        await redis.set(KEYS.epoch, "new")  # both names: a conflict, left for a person to resolve
        with pytest.raises(OldKeyLayout, match="flashwire migrate-keys"):
            await refuse_old_layout(redis, KEYS)

        done = await migrate_key_layout(redis, KEYS)

        assert (done.renamed, done.conflicts) == (3, ["fw:epoch"])
        assert await redis.xlen(KEYS.desk) == 1
        assert [g["name"] for g in await redis.xinfo_groups(KEYS.desk)] == [KEYS.desk_group.encode()]
        assert 3500 < await redis.ttl(KEYS.line("en-1")) <= 3600
        assert await redis.get(KEYS.push_registration("r1")) == b"{}"
        assert await redis.get("fw:tokens") == b"kept"
        assert (await redis.get("fw:epoch"), await redis.get(KEYS.epoch)) == (b"old", b"new")
        await redis.delete("fw:epoch")
        await refuse_old_layout(redis, KEYS)  # nothing old left: starts
        assert (await migrate_key_layout(redis, KEYS)).renamed == 0  # a second run does nothing
    finally:
        await redis.aclose()


async def _flashwire(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the `flashwire` command (at most 60 s): exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flashwire.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_command_migrates_and_a_worker_refuses_old_data(redis_server: RedisProcess) -> None:
    """`flashwire migrate-keys` against REDIS_URL; before it, `flashwire worker` exits with the reason."""
    env = {**os.environ, "REDIS_URL": redis_server.url, "FLASHWIRE_KEY_PREFIX": "fw"}
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.xadd("fw:desk", {"a": "x"})
        code, _, err = await _flashwire(env, "worker")
        assert code != 0
        assert "flashwire migrate-keys" in err
        code, out, _ = await _flashwire(env, "migrate-keys")
        assert (code, out.strip()) == (0, "renamed 1 key(s) to the hash-tagged layout")
        assert await redis.xlen(KEYS.desk) == 1
    finally:
        await redis.aclose()
