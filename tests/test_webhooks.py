"""Partner webhooks end to end (issue 12, must-show 2): real redis-server, worker and service processes
(tests/conftest.py's `stack`), real HTTP and HTTPS receivers that verify every request with the
`standardwebhooks` library (tests/webhook_receiver.py).

Retry schedules here are compressed (FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S in tenths of seconds
instead of minutes and hours) so that each test takes seconds; the behaviour they show does not
depend on the length of the delays. FLASHWIRE_WEBHOOK_ALLOW_PRIVATE lets the receivers live on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flashwire.core.webhook_models import message_of
from flashwire.dev.ports import free_port
from tests.conftest import ServiceNode, Stack, auth, eventually, post_line
from tests.webhook_receiver import Received, Receiver, always

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

ENV = {"FLASHWIRE_WEBHOOK_ALLOW_PRIVATE": "1", "FLASHWIRE_WEBHOOK_RETRY_JITTER": "0"}


async def _register(node: ServiceNode, token: str, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    """Register the receiver's URL; the receiver verifies with the secret the answer carries."""
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        response = await client.post(
            "/api/v1/webhooks", json={"url": receiver.url, "editions": ["en"], **fields}, headers=auth(token)
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    receiver.secret = body["secret"]
    return body


async def _get(node: ServiceNode, token: str, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        response = await client.get(path, headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _expected(stack: Stack, edition: str = "en") -> list[tuple[str, str]]:
    """(webhook-id, type) of every event on the edition's ticker a partner is sent, in ticker order."""
    redis = stack.redis()
    try:
        entries = await redis.xrange(stack.keys.ticker(edition))
    finally:
        await redis.aclose()
    found: list[tuple[str, str]] = []
    for entry_id, fields in entries:
        message = message_of(edition, entry_id.decode(), fields[b"t"].decode(), orjson.loads(fields[b"d"]))
        if message is not None:
            found.append((message.id, message.type))
    return found


async def _worker_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's metrics: (sample name, sorted labels) -> value."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _first_acceptances(receiver: Receiver) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for received in receiver.accepted():
        seen.setdefault(received.webhook_id, received.type)
    return list(seen.items())


async def _all_accepted(receiver: Receiver, count: int, timeout_s: float = 20.0) -> list[tuple[str, str]]:
    async def probe() -> list[tuple[str, str]] | None:
        found = _first_acceptances(receiver)
        return found if len(found) >= count else None

    return await eventually(probe, timeout_s=timeout_s)


async def test_signed_messages_arrive_once_accepted_in_ticker_order_across_retries(
    stack: Stack, tmp_path: Path
) -> None:
    """An HTTPS receiver that answers 500 to the first attempt of every third message gets every line,
    correction and kill, each accepted once, in ticker order; every request verifies with the
    library (the worker runs in TZ=Asia/Bangkok), and a retry carries the same webhook-id and body,
    signed again."""
    receiver = Receiver(tmp_path, tls=True)
    try:
        schedule = "0.3,0.3,0.3"
        # The worker in Bangkok time (UTC+7): its signatures still verify (PITFALLS 2.2).
        stack.worker(
            **ENV,
            TZ="Asia/Bangkok",
            FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S=schedule,
            FLASHWIRE_WEBHOOK_CA_FILE=receiver.ca_file,
        )
        node = stack.service(**ENV)
        partner = await stack.token("partner", ["en"], name="Wire partner")
        editor = await stack.token("chief", ["en"])
        order: list[str] = []

        def answer(received: Received, seen: int) -> tuple[int, float]:
            if seen == 0:
                order.append(received.webhook_id)
            failing = order.index(received.webhook_id) % 3 == 1
            return (500 if failing and seen == 0 else 204), 0.0

        receiver.answer = answer
        await _register(node, partner, receiver)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            ids = [(await post_line(client, editor, f"Line {i}"))["id"] for i in range(7)]
            correction = {"text": "Line 2, corrected"}
            corrected = await client.post(
                f"/api/v1/lines/{ids[2]}/corrections", json=correction, headers=auth(editor)
            )
            assert corrected.status_code == 201, corrected.text
            killed = await client.post(f"/api/v1/lines/{ids[4]}/retraction", json={}, headers=auth(editor))
            assert killed.status_code == 201, killed.text
        await stack.until_applied()
        expected = await _expected(stack)
        assert [kind for _, kind in expected].count("line.published") == 7
        assert {"line.corrected", "line.killed"} <= {kind for _, kind in expected}
        assert await _all_accepted(receiver, len(expected)) == expected
        assert receiver.unverified() == []
        retried = [r for r in receiver.requests if r.status == 500]
        assert len(retried) == len(expected) // 3
        for failed in retried:
            again = [r for r in receiver.accepted() if r.webhook_id == failed.webhook_id]
            assert len(again) == 1 and again[0].body == failed.body
        # The accepted messages carry the line as the API returns it.
        first = receiver.accepted()[0].message
        assert first["data"]["line"]["id"] == ids[0] and first["data"]["edition"] == "en"
        assert first["timestamp"].endswith("Z")
    finally:
        receiver.stop()


async def test_a_receiver_down_for_a_while_gets_everything_afterwards_in_order(
    stack: Stack, tmp_path: Path
) -> None:
    """A receiver down "for 10 minutes" gets every message afterwards, in order. Compressed: the
    schedule 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 s stands for the spec's 5 s, 5 min, 30 min, 2 h, ...;
    the receiver is down for 2.5 s, past the first three retries (as 10 minutes is past the
    5 s and 5 min ones) and well inside the schedule. The deliveries API shows the failed
    attempts."""
    receiver = Receiver(tmp_path)
    try:
        stack.worker(**ENV, FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S="0.2,0.4,0.8,1.6,3.2,6.4")
        node = stack.service(**ENV)
        partner = await stack.token("partner", ["en"])
        admin = await stack.token("admin", ["*"], name="Root")
        editor = await stack.token("editor", ["en"])
        endpoint = await _register(node, partner, receiver)
        receiver.stop()
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            for i in range(5):
                await post_line(client, editor, f"While down {i}")
        await asyncio.sleep(2.5)
        assert receiver.requests == []
        receiver.start()
        await stack.until_applied()
        expected = await _expected(stack)
        assert len(expected) == 5
        assert await _all_accepted(receiver, 5, timeout_s=15) == expected
        assert len(receiver.requests) == 5  # nothing sent twice once it was accepted
        page = await _get(node, admin, f"/api/v1/webhooks/{endpoint['id']}/deliveries")
        deliveries = list(reversed(page["deliveries"]))
        assert [d["webhook_id"] for d in deliveries] == [mid for mid, _ in expected]
        assert all(d["status"] == "delivered" for d in deliveries)
        first = deliveries[0]["attempts"]
        assert len(first) >= 4 and first[-1]["status"] == 204
        assert all(a["status"] is None and a["error"] for a in first[:-1])
        # An admin replays one delivery, then every delivery since the fourth: each keeps its webhook-id.
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            path = f"/api/v1/webhooks/{endpoint['id']}/replay"
            one = await client.post(path, json={"delivery_id": deliveries[1]["id"]}, headers=auth(admin))
            assert one.status_code == 201, one.text
            await eventually(lambda: _async(receiver.accepted()[5:]), timeout_s=10)
            # Every delivery recorded at or after the fourth's time: the fourth, the fifth, the replay
            # just made, and any recorded in the same millisecond as the fourth (a dispatcher's one
            # read records several at once).
            cut = deliveries[3]["recorded_at"]
            again = [i for i, d in enumerate(deliveries) if d["recorded_at"] >= cut]
            since = await client.post(path, json={"since": cut}, headers=auth(admin))
            assert since.status_code == 201 and len(since.json()["replayed"]) == len(again) + 1
        total = 5 + 1 + len(again) + 1
        replayed = await eventually(lambda: _async(receiver.accepted()[total - 1 :]), timeout_s=10)
        assert [r.webhook_id for r in receiver.accepted()[5:]] == [expected[i][0] for i in (1, *again, 1)]
        assert len(replayed) == 1
    finally:
        receiver.stop()


async def test_a_failing_endpoint_is_disabled_with_its_reason_and_410_disables_at_once(
    stack: Stack, tmp_path: Path
) -> None:
    """An endpoint answering 503 to everything is disabled after the last retry, the owner sees why
    and since when; one answering 410 is disabled after its first attempt. Enabled again, the
    first one is sent the messages that came after the one that failed. The worker's metrics
    count it all."""
    failing, gone = Receiver(tmp_path), Receiver(tmp_path)
    port = free_port()
    try:
        stack.worker(
            **ENV, FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S="0.1,0.1,0.1", FLASHWIRE_WORKER_METRICS_PORT=str(port)
        )
        node = stack.service(**ENV)
        partner = await stack.token("partner", ["en"])
        editor = await stack.token("editor", ["en"])
        failing.answer, gone.answer = always(503), always(410)
        endpoint = await _register(node, partner, failing)
        other = await _register(node, partner, gone)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            await post_line(client, editor, "Nobody takes this")

        async def disabled(endpoint_id: str) -> dict[str, Any] | None:
            found = await _get(node, partner, f"/api/v1/webhooks/{endpoint_id}")
            return found if found["status"] == "disabled" else None

        shown = await eventually(lambda: disabled(endpoint["id"]), timeout_s=15)
        assert "after 4 attempts" in shown["disabled_reason"] and "HTTP 503" in shown["disabled_reason"]
        assert shown["disabled_at"] is not None
        assert len(failing.requests) == 4
        shown_gone = await eventually(lambda: disabled(other["id"]), timeout_s=15)
        assert "410" in shown_gone["disabled_reason"]
        assert len(gone.requests) == 1
        # A disabled endpoint is not recorded for; enabled again, it gets what comes next.
        failing.answer = always(200)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            enabled = await client.post(f"/api/v1/webhooks/{endpoint['id']}/enable", headers=auth(partner))
            assert enabled.status_code == 200 and enabled.json()["status"] == "active"
            await post_line(client, editor, "Back again")
        accepted = await eventually(lambda: _async(failing.accepted()), timeout_s=15)
        assert [r.message["data"]["line"]["text"] for r in accepted] == ["Back again"]
        await asyncio.sleep(0.5)
        assert len(gone.requests) == 1
        metrics = await _worker_metrics(port)
        prefix = "flashwire_worker_webhook_"
        assert metrics[(prefix + "endpoints_disabled_total", (("reason", "failing"),))] == 1
        assert metrics[(prefix + "endpoints_disabled_total", (("reason", "gone"),))] == 1
        assert metrics[(prefix + "deliveries_total", (("outcome", "failed"),))] == 2
        assert metrics[(prefix + "deliveries_total", (("outcome", "delivered"),))] == 1
        assert metrics[(prefix + "attempts_total", (("result", "http_error"),))] == 5
        assert metrics[(prefix + "attempts_total", (("result", "success"),))] == 1
        assert metrics[(prefix + "attempt_seconds_count", ())] == 6
        assert metrics[(prefix + "messages_total", ())] == 3
    finally:
        failing.stop()
        gone.stop()


async def _async(value: list[Received]) -> list[Received] | None:
    return value or None


async def test_a_worker_sigkilled_mid_delivery_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    """The worker is SIGKILLed while the receiver holds the request of the third message; two new
    workers take over together: the message in flight is sent again (same webhook-id), then the
    rest, every message accepted, in order, and only the one in flight twice at most."""
    receiver = Receiver(tmp_path)
    in_flight = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        worker = stack.worker(**ENV, FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S="0.2,0.2,0.2,0.2")
        node = stack.service(**ENV)
        partner = await stack.token("partner", ["en"])
        editor = await stack.token("editor", ["en"])
        order: list[str] = []

        def answer(received: Received, seen: int) -> tuple[int, float]:
            if seen == 0:
                order.append(received.webhook_id)
            if len(order) == 3 and received.webhook_id == order[2] and seen == 0:
                loop.call_soon_threadsafe(in_flight.set)
                return 204, 3.0
            return 204, 0.0

        receiver.answer = answer
        await _register(node, partner, receiver)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            for i in range(6):
                await post_line(client, editor, f"Burst {i}")
            await asyncio.wait_for(in_flight.wait(), 15)
            worker.kill()
            for i in range(6, 9):
                await post_line(client, editor, f"After the kill {i}")
        for _ in range(2):
            stack.worker(**ENV, FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S="0.2,0.2,0.2,0.2")
        await stack.until_applied(timeout_s=20)
        expected = await _expected(stack)
        assert len(expected) == 9
        assert await _all_accepted(receiver, 9, timeout_s=30) == expected
        counts = {mid: sum(1 for r in receiver.requests if r.webhook_id == mid) for mid, _ in expected}
        assert {mid for mid, n in counts.items() if n > 1} <= {order[2]}
    finally:
        receiver.stop()
