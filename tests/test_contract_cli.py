"""`flashwire token list` never prints terminal escapes raw, even for names stored before the text rule."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.dev.redis_server import RedisProcess
from tests.conftest import ROOT


async def test_token_list_escapes_control_and_bidi_characters_of_stored_names(
    redis_server: RedisProcess,
) -> None:
    """A token record written straight to Redis (as one stored before names were checked) with an ANSI
    colour sequence and a bidi override is listed with those characters escaped, the rest intact."""
    keys = Keys("fw")
    record = {
        "id": "0a1b2c3d4e5f",
        "name": "\x1b[31mroot\x1b[0m \u202eNadia \u0646\u0627\u062f\u064a\u0629",
        "role": "editor",
        "editions": ["en"],
        "secret_sha256": "0" * 64,
        "created_at": "2026-11-25T16:40:00.000Z",
        "revoked_at": None,
    }
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.hset(keys.tokens, record["id"], orjson.dumps(record))
    finally:
        await redis.aclose()
    env = {**os.environ, "REDIS_URL": redis_server.url}
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flashwire.cli", "token", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "0a1b2c3d4e5f" in listed.stdout
    assert "\x1b" not in listed.stdout and "\u202e" not in listed.stdout, repr(listed.stdout)
    assert "\\x1b[31mroot\\x1b[0m \\u202eNadia \u0646\u0627\u062f\u064a\u0629" in listed.stdout
