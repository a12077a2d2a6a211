"""Pushes to closed apps end to end (issue 12, must-show 1): real redis-server, worker and service
processes, and the three local push services (tests/push_services/), which check what the real ones
check — the VAPID JWT and the RFC 8291 encryption (every Web Push message is decrypted), the APNs
ES256 provider token over HTTP/2 and TLS, the FCM OAuth2 token — and record what they accepted.

- a flash line reaches 10,000 Web Push, 2,000 APNs and 2,000 FCM targets, each exactly once; its
  correction replaces it (same collapse key), its kill withdraws it; targets the services call
  gone are removed; 429s are retried after their Retry-After;
- a worker SIGKILLed in the middle of a fan-out loses no target, and what it repeats the platform
  collapses (same Topic: one alert shown);
- each registration's choices hold: edition, topics, minimum urgency, quiet hours, the hourly cap.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from flashwire.core.keys import Keys
from flashwire.core.push_models import parse_registration
from flashwire.core.push_registry import PushRegistry
from flashwire.core.settings import Settings
from flashwire.workers.push.base import Alert
from tests.conftest import ServiceNode, Stack, auth, eventually, post_line
from tests.push_stack import PushServices, registration_body

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

PLATFORMS = ("webpush", "apns", "fcm")


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[PushServices]:
    started = await asyncio.to_thread(PushServices.start, tmp_path / "push")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def web_push(tmp_path: Path) -> AsyncIterator[PushServices]:
    """The local Web Push service alone (the tests of one platform's fan-out)."""
    started = await asyncio.to_thread(PushServices.start, tmp_path / "push", only="webpush")
    try:
        yield started
    finally:
        started.stop()


def service_of(services: PushServices, platform: str) -> Any:
    return getattr(services, platform)


def name_of(platform: str, target: dict[str, Any]) -> str:
    """The key a target is known by in a service's `received`: the endpoint or the token."""
    return str(target["endpoint"] if platform == "webpush" else target["token"])


def app_data(platform: str, message: dict[str, Any]) -> dict[str, Any]:
    """The alert's data as the app reads it (docs/push.md, "Payload"): Web Push gives the decrypted
    JSON, APNs puts it under `flashwire` beside `aps`, FCM's data values are strings."""
    payload: dict[str, Any] = message["payload"]
    if platform == "apns":
        return dict(payload["flashwire"])
    if platform == "fcm":
        return {**payload, "version": int(payload["version"])}
    return payload


def received_name(platform: str, message: dict[str, Any], endpoints: dict[str, str]) -> str:
    """A received message's target, as `name_of` names it (the Web Push service may name a
    subscription by its id: found in the endpoint)."""
    token = str(message["token"])
    return endpoints.get(token, token) if platform == "webpush" else token


async def register_many(
    stack: Stack, settings: Settings, platform: str, targets: list[dict[str, Any]]
) -> list[str]:
    """Register targets straight through the registry (the code behind the API), 200 at a time:
    tens of thousands of HTTP requests would only test the test machine."""
    redis = stack.redis()
    registry = PushRegistry(redis, Keys(settings.key_prefix))
    ids: list[str] = []
    try:
        for start in range(0, len(targets), 200):
            chunk = targets[start : start + 200]
            stored = await asyncio.gather(
                *(
                    registry.register(
                        parse_registration(registration_body(platform, target), settings),
                        client=f"198.51.100.{i % 250}",
                        now_ms=int(time.time() * 1000),
                        max_per_client=10**6,
                    )
                    for i, target in enumerate(chunk)
                )
            )
            ids += [result.record["id"] for result, _ in stored]
    finally:
        await redis.aclose()
    return ids


async def wait_for_count(
    services: PushServices, platform: str, count: int, timeout_s: float
) -> list[dict[str, Any]]:
    service = service_of(services, platform)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(service.count) >= count:
            break
        await asyncio.sleep(0.5)
    return list(await asyncio.to_thread(service.received))


def start_stack(stack: Stack, services: PushServices, **env: str) -> tuple[ServiceNode, Settings]:
    settings_env = {**services.env, **env}
    stack.worker(**settings_env)
    node = stack.service(**settings_env)
    return node, Settings.from_env({**stack.env, **settings_env})


@pytest.mark.load
@pytest.mark.timeout(300)
async def test_a_flash_line_reaches_10000_web_push_2000_apns_and_2000_fcm_targets_each_once(
    services: PushServices, stack: Stack
) -> None:
    """Each target exactly once (the Web Push messages decrypted by the service); gone targets
    removed, as their owners see; 429s sent again no sooner than Retry-After; the push counts
    per line version in the API."""
    await _fan_out(services, stack, {"webpush": 10_000, "apns": 2_000, "fcm": 2_000}, follow_ups=False)


@pytest.mark.timeout(180)
async def test_a_correction_replaces_the_alert_and_a_kill_withdraws_it_on_every_platform(
    services: PushServices, stack: Stack
) -> None:
    """The same, 300 targets per platform, then the line's correction (same collapse key, version
    2, on every target that has the alert) and its kill (the withdrawal, with the editor's reason,
    under the same key: a browser shows one withdrawal per subscription)."""
    await _fan_out(services, stack, {"webpush": 300, "apns": 300, "fcm": 300}, follow_ups=True)


async def _fan_out(services: PushServices, stack: Stack, counts: dict[str, int], *, follow_ups: bool) -> None:
    node, settings = start_stack(stack, services)
    targets = {p: await asyncio.to_thread(service_of(services, p).targets, n) for p, n in counts.items()}
    names = {p: [name_of(p, t) for t in targets[p]] for p in PLATFORMS}
    endpoints = {t["endpoint"].rsplit("/", 1)[-1]: t["endpoint"] for t in targets["webpush"]}
    gone = {p: names[p][:25] for p in PLATFORMS}
    throttled = {p: names[p][25:40] for p in PLATFORMS}
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        # The first few of each platform register as an app does, through the API.
        secrets: dict[str, str] = {}
        for platform in PLATFORMS:
            for target in targets[platform][:30]:
                created = await client.post(
                    "/api/v1/push/registrations", json=registration_body(platform, target)
                )
                assert created.status_code == 201, created.text
                secrets[created.json()["id"]] = created.json()["secret"]
        for platform in PLATFORMS:
            await register_many(stack, settings, platform, targets[platform][30:])
        for platform in PLATFORMS:
            service = service_of(services, platform)
            await asyncio.to_thread(service.faults, "gone", gone[platform])
            await asyncio.to_thread(service.faults, "throttle", throttled[platform], 1)

        editor = await stack.token("chief", ["en"])  # a chief may kill
        posted = await post_line(
            client, editor, "Earthquake of magnitude 7.1 strikes off Peru", urgency="flash"
        )
        line_id = posted["id"]
        expected = {p: counts[p] - len(gone[p]) for p in PLATFORMS}
        received = {p: await wait_for_count(services, p, expected[p], 180) for p in PLATFORMS}

        collapse = {"webpush": topic_of(line_id), "apns": line_id, "fcm": line_id}
        for platform in PLATFORMS:
            got = received[platform]
            by_target = Counter(received_name(platform, m, endpoints) for m in got)
            assert len(got) == expected[platform], f"{platform}: {len(got)} of {expected[platform]}"
            assert set(by_target) == set(names[platform]) - set(gone[platform]), platform
            assert max(by_target.values()) == 1, f"{platform}: a target got the line twice"
            payloads = {app_data(platform, m)["id"] for m in got}
            assert payloads == {line_id}
            assert {m["collapse"] for m in got} == {collapse[platform]}
            sample = app_data(platform, got[0])
            assert (sample["kind"], sample["version"], sample["edition"], sample["lang"], sample["dir"]) == (
                "line",
                1,
                "en",
                "en",
                "ltr",
            )
            assert sample["title"] == "Breaking" and sample["text"].startswith("Earthquake")
            # 429 then accepted, no sooner than its Retry-After.
            rejected = await asyncio.to_thread(service_of(services, platform).rejected)
            first_refusal = {r["token"]: r["at_ms"] for r in rejected if r["status"] == 429}
            assert len(first_refusal) == len(throttled[platform])
            arrival = {received_name(platform, m, endpoints): m["at_ms"] for m in got}
            for token, refused_ms in first_refusal.items():
                name = endpoints.get(token, token) if platform == "webpush" else token
                assert arrival[name] - refused_ms >= 950, f"{platform}: retried before Retry-After"

        # Gone targets are removed, and their owners see it.
        redis = stack.redis()
        try:
            keys = Keys(settings.key_prefix)
            remaining = await redis.zcard(keys.push_targets("en", "flash"))
            assert remaining == sum(counts.values()) - sum(len(g) for g in gone.values())
        finally:
            await redis.aclose()
        api_gone = [
            i
            for i in secrets
            if (
                await client.get(
                    f"/api/v1/push/registrations/{i}", headers={"Authorization": f"Bearer {secrets[i]}"}
                )
            ).status_code
            == 404
        ]
        assert len(api_gone) == 3 * 25

        detail = await eventually(
            lambda: _push_reach(client, editor, line_id, "1:line", sum(expected.values())), 20
        )
        assert detail["targets"] == sum(counts.values())
        assert detail["removed"] == 75 and detail["failed"] == 0 and detail["ms"] is not None

        if not follow_ups:
            return
        # The correction replaces the alert on every target that has it; the kill withdraws it.
        corrected = await client.post(
            f"/api/v1/lines/{line_id}/corrections",
            json={"text": "Earthquake of magnitude 6.8 strikes off Peru"},
            headers={"Authorization": f"Bearer {editor}"},
        )
        assert corrected.status_code == 201, corrected.text
        after_correction = {p: await wait_for_count(services, p, 2 * expected[p], 180) for p in PLATFORMS}
        killed = await client.post(
            f"/api/v1/lines/{line_id}/retraction",
            json={"reason": "Wrong agency report"},
            headers={"Authorization": f"Bearer {editor}"},
        )
        assert killed.status_code == 201, killed.text
        after_kill = {p: await wait_for_count(services, p, 3 * expected[p], 180) for p in PLATFORMS}
    for platform in PLATFORMS:
        corrections = [m for m in after_correction[platform][expected[platform] :]]
        assert len(corrections) == expected[platform]
        assert {app_data(platform, m)["kind"] for m in corrections} == {"correction"}
        assert {m["collapse"] for m in corrections} == {collapse[platform]}
        assert {app_data(platform, m)["version"] for m in corrections} == {2}
        withdrawals = after_kill[platform][2 * expected[platform] :]
        assert len(withdrawals) == expected[platform]
        assert {app_data(platform, m)["kind"] for m in withdrawals} == {"withdrawal"}
        assert {app_data(platform, m)["text"] for m in withdrawals} == {"Wrong agency report"}
        assert {m["collapse"] for m in withdrawals} == {collapse[platform]}
    # What a browser shows after collapsing by Topic: the withdrawal, once, on every subscription.
    inbox = await asyncio.to_thread(services.webpush.control, "GET", "inbox")
    assert _shown(inbox, collapse["webpush"]) == {"withdrawal": expected["webpush"]}


def topic_of(line_id: str) -> str:
    """The Web Push Topic of every alert about a line."""
    return Alert(
        kind="line", line_id=line_id, version=1, edition="en", language="en", direction="ltr", title="",
        text="", url=None, cursor="0-0", urgency="flash", expires_at_s=0,
    ).topic  # fmt: skip


def _shown(inbox: Any, topic: str) -> dict[str, int]:
    """How many subscriptions show each kind of alert under `topic`, from the Web Push service's
    inbox ({"inbox": {endpoint: [the latest message per Topic, ...]}}: RFC 8030 §5.4 replacement)."""
    shown: Counter[str] = Counter()
    for messages in inbox["inbox"].values():
        kinds = [m["payload"]["kind"] for m in messages if m["collapse"] == topic]
        assert len(kinds) <= 1, "two alerts shown under one Topic"
        shown.update(kinds)
    return dict(shown)


async def _push_reach(
    client: httpx.AsyncClient, editor: str, line_id: str, key: str, accepted: int
) -> dict[str, Any] | None:
    detail = (
        await client.get(f"/api/v1/lines/{line_id}", headers={"Authorization": f"Bearer {editor}"})
    ).json()
    push = detail["push"].get(key)
    return push if push and push["accepted"] == accepted and push["ms"] is not None else None


@pytest.mark.timeout(240)  # its own waits add up to 180 s (60 for the first third, 120 for the rest)
async def test_a_worker_killed_mid_fan_out_loses_no_target_and_its_repeats_collapse(
    web_push: PushServices, stack: Stack
) -> None:
    """SIGKILL while a fan-out of 1,500 Web Push targets is a third done; a second worker takes
    over: every target ends with the alert, and any sent twice (in flight at the kill) is the same
    Topic, so the push service keeps one."""
    env = {**web_push.env, "FLASHWIRE_PUSH_CONCURRENCY": "8", "FLASHWIRE_PUSH_BATCH_SIZE": "100"}
    first = stack.worker(**env)
    node = stack.service(**env)
    settings = Settings.from_env({**stack.env, **env})
    targets = await asyncio.to_thread(web_push.webpush.targets, 1_500)
    await register_many(stack, settings, "webpush", targets)
    endpoints = {t["endpoint"].rsplit("/", 1)[-1]: t["endpoint"] for t in targets}
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        editor = await stack.token("editor", ["en"])
        posted = await post_line(client, editor, "Parliament dissolved", urgency="flash")
    partial = await wait_for_count(web_push, "webpush", 500, 60)
    first.kill()
    assert len(partial) < 1_500, "the fan-out ended before the kill: make it slower"
    stack.worker(**env)
    received = await wait_for_count(web_push, "webpush", 1_500, 120)
    by_target = Counter(received_name("webpush", m, endpoints) for m in received)
    assert set(by_target) == {t["endpoint"] for t in targets}, "a target was lost"
    repeated = sum(n - 1 for n in by_target.values())
    # Only what was in flight or not yet recorded when the worker died may be sent again.
    assert repeated <= 8 * 100
    inbox = await asyncio.to_thread(web_push.webpush.control, "GET", "inbox")
    assert _shown(inbox, topic_of(posted["id"])) == {"line": 1_500}


async def test_each_registration_gets_what_it_chose(web_push: PushServices, stack: Stack) -> None:
    """Edition, topics (a topic filter takes only lines with one of its topics, as a reader's
    does), minimum urgency, quiet hours and the hourly cap, per registration."""
    node, _ = start_stack(stack, web_push, FLASHWIRE_PUSH_HOURLY_CAP="4")
    t = await asyncio.to_thread(web_push.webpush.targets, 6)
    now = datetime.now(UTC)
    quiet = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
        "time_zone": "UTC",
    }
    choices = {
        "flash-en": registration_body("webpush", t[0]),
        "routine-en": registration_body("webpush", t[1], urgency="routine"),
        "politics-en": registration_body("webpush", t[2], urgency="routine", topics=["politics"]),
        "ar-only": registration_body("webpush", t[3], editions=["ar"], urgency="routine"),
        "quiet": registration_body("webpush", t[4], urgency="routine", quiet_hours=quiet),
        "en-and-ar": registration_body("webpush", t[5], editions=["en", "ar"], urgency="urgent"),
    }
    who = {t[i]["endpoint"]: name for i, name in enumerate(choices)}
    endpoints = {target["endpoint"].rsplit("/", 1)[-1]: target["endpoint"] for target in t}
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        for body in choices.values():
            assert (await client.post("/api/v1/push/registrations", json=body)).status_code == 201
        editor = await stack.token("chief", ["en", "ar"])
        for edition, urgency, topics, text in [
            ("en", "flash", [], "A"),
            ("en", "routine", ["economy"], "B"),
            ("en", "routine", ["politics"], "C"),
            ("ar", "urgent", [], "D"),
            ("en", "urgent", [], "E"),
            ("en", "flash", [], "end"),
        ]:
            await post_line(client, editor, text, edition=edition, urgency=urgency, topics=topics)

    async def received() -> dict[str, list[str]]:
        got: dict[str, list[str]] = defaultdict(list)
        for m in await asyncio.to_thread(web_push.webpush.received):
            got[who[received_name("webpush", m, endpoints)]].append(m["payload"]["text"])
        return dict(got)

    async def settled() -> dict[str, list[str]] | None:
        got = await received()
        return got if "end" in got.get("flash-en", []) and "end" in got.get("en-and-ar", []) else None

    await eventually(settled, 60)
    await asyncio.sleep(1)  # anything sent wrongly would have arrived by now
    got = await received()
    assert sorted(got["flash-en"]) == ["A", "end"]
    assert sorted(got["politics-en"]) == ["C"]
    assert sorted(got["ar-only"]) == ["D"]
    assert sorted(got["en-and-ar"]) == ["A", "D", "E", "end"]
    assert "quiet" not in got
    # routine-en wants A, B, C, E and end: the hourly cap (4) lets four through.
    assert len(got["routine-en"]) == 4 and set(got["routine-en"]) <= {"A", "B", "C", "E", "end"}


async def test_a_line_killed_or_corrected_while_its_batches_wait_reaches_nobody_stale(
    web_push: PushServices, stack: Stack
) -> None:
    """Half the targets answer 429 (Retry-After 2 s) to the new line; the line is killed (or
    corrected) while their batch waits. When it runs again it must not send the killed line (or
    the old text): a target would keep an alert nobody withdraws. The others, reached before the
    kill, show the withdrawal (the correction)."""
    assert web_push.webpush is not None
    service = web_push.webpush
    start_stack(stack, web_push, FLASHWIRE_PUSH_BATCH_SIZE="10")
    node = stack.processes[-1]
    assert isinstance(node, ServiceNode)
    settings = Settings.from_env({**stack.env, **web_push.env})
    chief = await stack.token("chief", ["en"])
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        for change in ("kill", "correct"):
            targets = await asyncio.to_thread(service.targets, 40)
            await register_many(stack, settings, "webpush", targets)
            late = [t["endpoint"] for t in targets[20:]]
            await asyncio.to_thread(service.faults, "throttle", late, 2)
            before = await asyncio.to_thread(service.count)
            posted = await post_line(client, chief, f"Line to {change}", urgency="flash")
            await wait_for_count(web_push, "webpush", before + 20, 30)
            if change == "kill":
                response = await client.post(
                    f"/api/v1/lines/{posted['id']}/retraction", json={"reason": "Wrong"}, headers=auth(chief)
                )
            else:
                response = await client.post(
                    f"/api/v1/lines/{posted['id']}/corrections",
                    json={"text": "Line corrected"},
                    headers=auth(chief),
                )
            assert response.status_code == 201, response.text
            await asyncio.sleep(4)  # the 429s' retry (2 s) and any follow-up have run
            inbox = (await asyncio.to_thread(service.control, "GET", "inbox"))["inbox"]
            shown = {
                endpoint: [m["payload"] for m in messages if m["collapse"] == topic_of(posted["id"])]
                for endpoint, messages in inbox.items()
            }
            early = [t["endpoint"] for t in targets[:20]]
            if change == "kill":
                assert all([p["kind"] for p in shown[e]] == ["withdrawal"] for e in early)
                assert all(not shown.get(e) for e in late), "a killed line was pushed after its kill"
            else:
                assert all(shown[e][0]["text"] == "Line corrected" for e in early + late)
                assert all(shown[e][0]["version"] == 2 for e in late)
            for target_id in [t["endpoint"] for t in targets]:
                await asyncio.to_thread(service.faults, "gone", [target_id])


async def test_a_retried_send_does_not_count_twice_against_the_hourly_cap(
    web_push: PushServices, stack: Stack
) -> None:
    """Cap 1: a target whose first try is refused 429 still gets the line when its batch runs again
    (the cap counts alerts accepted, not tries)."""
    assert web_push.webpush is not None
    node, settings = start_stack(stack, web_push, FLASHWIRE_PUSH_HOURLY_CAP="1")
    [target] = await asyncio.to_thread(web_push.webpush.targets, 1)
    await register_many(stack, settings, "webpush", [target])
    await asyncio.to_thread(web_push.webpush.faults, "throttle", [target["endpoint"]], 1)
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
        posted = await post_line(client, await stack.token("editor", ["en"]), "Capped?", urgency="flash")
    [received] = await wait_for_count(web_push, "webpush", 1, 20)
    assert received["payload"]["id"] == posted["id"]
