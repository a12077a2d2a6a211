"""The push planner (workers/push/planner.py) against a real Redis and arq's queue: planning an
event again (a worker died while planning it, its entry claimed by another) never leaves a target
out, however the registrations changed in between; and a batch whose Redis goes away is retried
by arq instead of failed for good (../shared/PITFALLS.md 2.7)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from arq import Retry
from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from flashwire.core.keys import Keys
from flashwire.core.push_models import parse_registration
from flashwire.core.push_registry import PushRegistry
from flashwire.core.settings import Settings
from flashwire.core.vapid import ensure_key_file
from flashwire.dev.redis_server import RedisProcess
from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import OutageLog
from flashwire.workers.push.alerts import PlannedAlert, planned_for_line
from flashwire.workers.push.base import PAYLOAD_MAX_BYTES
from flashwire.workers.push.batch import PushRun, push_batch
from flashwire.workers.push.planner import PushPlanner

HOST = "push.example.net"


@pytest.fixture
def settings(tmp_path: Path, shared_redis_server: RedisProcess) -> Settings:
    return Settings.from_env(
        {
            "REDIS_URL": shared_redis_server.url,
            "FLASHWIRE_KEY_PREFIX": tmp_path.name,
            "FLASHWIRE_VAPID_PRIVATE_KEY_FILE": str(ensure_key_file(tmp_path / "vapid.pem")),
            "FLASHWIRE_VAPID_SUBJECT": "mailto:alerts@newsroom.example",
            "FLASHWIRE_WEBPUSH_HOSTS": HOST,
            "FLASHWIRE_PUSH_BATCH_SIZE": "100",
        }
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[ArqRedis]:
    redis = ArqRedis.from_url(settings.redis_url)
    yield redis
    await redis.aclose()


def _subscription(i: int) -> dict[str, object]:
    from tests.test_push_registrations import browser_subscription

    subscription = browser_subscription()
    subscription["endpoint"] = f"https://{HOST}/s/{i:04d}-{os.urandom(4).hex()}"
    return subscription


def _planned(settings: Settings) -> PlannedAlert:
    line = {
        "id": "en-00000000000000aa",
        "version": 1,
        "urgency": "flash",
        "text": "t",
        "topics": [],
        "language": "en",
        "direction": "ltr",
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "expires_at": "2099-01-01T00:00:00.000Z",
    }
    return planned_for_line("en", "1-0", line, "line", "", settings, "subscribers")


async def _queued_targets(pool: ArqRedis, keys: Keys) -> dict[str, list[str]]:
    return {job.job_id or "": list(job.args[2]) for job in await pool.queued_jobs(queue_name=keys.push_queue)}


async def test_planning_again_after_a_crash_leaves_no_target_out(settings: Settings, pool: ArqRedis) -> None:
    """The review's case: the first planning died after enqueuing batches 0 and 1; batch 0 ran
    (and found a target gone, removing it) before the event was planned again, so every later batch
    shifts by one. Named by number, the new batch 1 was dropped as a duplicate of the old batch 1
    still queued, and one target fell between them."""
    keys = Keys(settings.key_prefix)
    registry = PushRegistry(pool, keys)
    for i in range(250):
        body = {"platform": "webpush", "subscription": _subscription(i), "editions": ["en"]}
        await registry.register(
            parse_registration(body, settings), client="198.51.100.1", now_ms=0, max_per_client=10**6
        )
    planner = PushPlanner(pool, pool, keys, settings, name="w1", outages=OutageLog(), metrics=WorkerMetrics())
    planned = _planned(settings)
    assert await planner.plan("en", "1-0", planned) == 250
    first = await _queued_targets(pool, keys)
    assert len(first) == 3
    ordered = sorted(first.items(), key=lambda item: item[1][0])
    # The planner died before enqueuing the last batch...
    never_id = ordered[-1][0]
    await pool.zrem(keys.push_queue, never_id)
    await pool.delete(job_key_prefix + never_id)
    # ... and batch 0 ran (arq keeps no result: keep_result=0), finding one of its targets gone.
    ran_id, ran = ordered[0]
    await pool.zrem(keys.push_queue, ran_id)
    await pool.delete(job_key_prefix + ran_id)
    await registry.remove(ran[5])
    await planner.plan("en", "1-0", planned)
    covered = set(ran) | {t for targets in (await _queued_targets(pool, keys)).values() for t in targets}
    live = set(await registry.page("en", "flash", "", 1000))
    assert live <= covered, f"never planned: {sorted(live - covered)}"


async def test_a_batch_whose_redis_is_gone_is_retried_not_failed(settings: Settings, tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "gone").start()
    redis = ArqRedis.from_url(server.url, socket_connect_timeout=1)
    server.stop()
    run = PushRun(redis, Keys(settings.key_prefix), settings, {}, WorkerMetrics())
    planned = _planned(settings)
    ctx = {"flashwire_push": run, "job_id": "j", "job_try": 1, "redis": redis}
    try:
        with pytest.raises(Retry):
            await push_batch(ctx, "en:1-0", planned.job_args(), ["a", "b"])
    finally:
        await redis.aclose()


def test_an_alert_too_big_for_the_push_services_leaves_out_its_url(settings: Settings) -> None:
    """280 Arabic characters and a 1,300-character link are a valid line, but over the 2 KB a push
    may carry (Firefox on Android refuses 3 KB): the link goes (the app can fetch the line by id),
    the text stays whole."""
    text = "عاجل " * 56
    line = {
        "id": "ar-00000000000000bb",
        "version": 1,
        "urgency": "flash",
        "text": text,
        "url": "https://news.example/" + "a" * 1_300,
        "language": "ar",
        "direction": "rtl",
        "updated_at": "2026-12-07T23:00:00.000Z",
        "expires_at": "2099-01-01T00:00:00.000Z",
    }
    alert = planned_for_line("ar", "1-0", line, "line", "", settings, "subscribers").alert
    assert alert.url is None and alert.text == text
    assert len(orjson.dumps(alert.payload())) <= PAYLOAD_MAX_BYTES
    short = planned_for_line(
        "ar", "1-0", {**line, "url": "https://news.example/x"}, "line", "", settings, "subscribers"
    )
    assert short.alert.url == "https://news.example/x"
