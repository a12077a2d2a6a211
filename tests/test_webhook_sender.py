"""One webhook attempt against real receivers (tests/webhook_receiver.py), in process: the worker's
sender (workers/webhooks/sender.py) pins the checked address but keeps the name for TLS and Host,
follows no redirect, keeps its deadline, and refuses internal addresses unless allowed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flashwire.core.webhook_models import new_secret
from flashwire.workers.webhooks.sender import Sender
from flashwire.workers.webhooks.signing import signed_headers
from tests.webhook_receiver import Receiver, always

BODY = b'{"type":"line.published","timestamp":"2026-12-07T10:40:03.117Z","data":{}}'


@pytest.fixture
def receiver(tmp_path: Path) -> Receiver:
    created = Receiver(tmp_path, tls=True)
    created.secret = new_secret()
    return created


async def _send(sender: Sender, receiver: Receiver, url: str):  # type: ignore[no-untyped-def]
    headers = signed_headers("msg_en_1-0", BODY, [receiver.secret], datetime.now(UTC))
    try:
        return await sender.post(url, headers, BODY)
    finally:
        await sender.aclose()


async def test_a_named_https_endpoint_is_reached_at_its_checked_address_with_its_name(
    receiver: Receiver,
) -> None:
    """The request goes to the address the name resolved to, with the name as TLS server name (the
    certificate is checked for it) and as Host; the receiver verifies the signature."""
    try:
        sender = Sender(timeout_s=5, allow_private=True, ca_file=receiver.ca_file)
        result = await _send(sender, receiver, receiver.url_named("localhost"))
        assert result.ok and result.status == 204, result
        assert receiver.accepted()[0].host == f"localhost:{receiver.port}"
    finally:
        receiver.stop()


async def test_an_untrusted_certificate_is_a_failed_attempt(receiver: Receiver) -> None:
    try:
        result = await _send(Sender(timeout_s=5, allow_private=True), receiver, receiver.url)
        assert not result.ok and result.status is None and "SSL" in (result.error or "") + str(result)
    finally:
        receiver.stop()


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    """A 3xx could point inside our network: it is a failed attempt, never followed."""
    receiver.answer = always(307)
    try:
        result = await _send(
            Sender(timeout_s=5, allow_private=True, ca_file=receiver.ca_file), receiver, receiver.url
        )
        assert not result.ok and result.status == 307 and result.error == "HTTP 307"
        assert len(receiver.requests) == 1
    finally:
        receiver.stop()


async def test_the_deadline_holds_for_a_receiver_that_does_not_answer(receiver: Receiver) -> None:
    receiver.answer = lambda _received, _seen: (204, 2.0)
    try:
        result = await _send(
            Sender(timeout_s=0.5, allow_private=True, ca_file=receiver.ca_file), receiver, receiver.url
        )
        assert not result.ok and result.error == "no answer within 0.5 s" and result.duration_s < 1.5
    finally:
        receiver.stop()


async def test_a_name_resolving_to_loopback_is_refused_at_sending(receiver: Receiver) -> None:
    """The address rule at the moment of sending: `localhost` resolves to 127.0.0.1, refused."""
    try:
        result = await _send(
            Sender(timeout_s=5, allow_private=False), receiver, receiver.url_named("localhost")
        )
        assert result.refused and not result.ok and "loopback" in (result.error or "")
        assert receiver.requests == []
    finally:
        receiver.stop()


def test_retry_delays_follow_the_schedule_with_jitter_and_retry_after() -> None:
    """The default schedule is the spec's (5 s ... 10 h); each delay is stretched by at most the
    jitter, never shortened; a Retry-After asks for longer, up to 10 h."""
    from flashwire.core.settings import Settings
    from flashwire.workers.webhooks.deliver import Deliveries

    settings = Settings.from_env({})
    assert settings.webhook_retry_schedule_s == (5, 300, 1800, 7200, 18000, 36000, 36000)
    deliveries = Deliveries(None, None, None, settings, None, runner="test")  # type: ignore[arg-type]
    for attempt, base in enumerate(settings.webhook_retry_schedule_s, start=1):
        delays = [deliveries.delay_s(attempt, None) for _ in range(200)]
        assert base <= min(delays) and max(delays) <= base * 1.1 and len(set(delays)) > 1
    assert deliveries.delay_s(1, 120) == 120
    assert deliveries.delay_s(1, 10**9) == 10 * 3600
