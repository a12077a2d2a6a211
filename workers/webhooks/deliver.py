"""One attempt at delivering one message: the arq job `deliver_webhook` and what follows its answer.

- 2xx: delivered; the endpoint's next message is started at once.
- 410 Gone: the delivery fails and the endpoint is disabled at once (Standard Webhooks, "Retry
  schedule"), with the reason shown to its owner.
- anything else (another status, a 3xx, no answer, a refused address): the next attempt after
  the schedule's next delay (`FLASHWIRE_WEBHOOK_RETRY_SCHEDULE_S`, stretched by up to
  `FLASHWIRE_WEBHOOK_RETRY_JITTER` of itself, or longer if the receiver sent `Retry-After`);
  after the last one the delivery fails and the endpoint is disabled, the reason naming the
  last status or error.

A settled delivery (delivered or failed) lets the next message go. A disabled endpoint keeps its
place: re-enabling it (service/webhooks.py) starts with the message after the one that failed.
An attempt that finds Redis gone asks arq to run it again shortly (`Retry`: the only exception arq
retries, ../shared/PITFALLS.md 2.7). What the network or the receiver does never raises (the
sender answers an `AttemptResult`); a bug that does ends the job, and the watchdog
(workers/webhooks/chain.py) enqueues the same attempt again within a second or so.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from typing import Any

from arq.worker import Retry

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.settings import Settings
from flashwire.core.webhook_models import Attempt, EndpointRecord
from flashwire.core.webhook_store import EndpointStore
from flashwire.core.webhook_urls import EndpointRefused, endpoint_url
from flashwire.workers.outage import REDIS_DOWN
from flashwire.workers.webhooks.chain import Chain
from flashwire.workers.webhooks.metrics import WebhookMetrics
from flashwire.workers.webhooks.sender import AttemptResult, Sender
from flashwire.workers.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

REDIS_RETRY_S = 1
# Longest wait a receiver's Retry-After may ask for (the longest step of the default schedule).
RETRY_AFTER_MAX_S = 10 * 3600


class Deliveries:
    """Runs attempts for the worker's webhook queue; one per worker process, in the jobs' ctx."""

    def __init__(
        self,
        store: EndpointStore,
        chain: Chain,
        sender: Sender,
        settings: Settings,
        metrics: WebhookMetrics,
        *,
        runner: str,
    ) -> None:
        self._store = store
        self._chain = chain
        self._sender = sender
        self._settings = settings
        self._metrics = metrics
        self._runner = runner

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds before attempt `attempt + 1`, after attempt `attempt` failed."""
        base = self._settings.webhook_retry_schedule_s[attempt - 1]
        delay = base * (1 + random.uniform(0, self._settings.webhook_retry_jitter))
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
        return delay

    async def attempt(self, endpoint_id: str, entry_id: str, attempt: int) -> str:
        """Run one attempt; returns what came of it (for arq's log): delivered, retry, failed,
        skipped (endpoint disabled or gone), stale (the state moved on)."""
        endpoint = await self._store.get(endpoint_id)
        if endpoint is None or endpoint.status != "active":
            return "skipped"
        if not await self._chain.begin(endpoint_id, entry_id, attempt, self._runner):
            return "stale"
        entry = await self._chain.entry(endpoint_id, entry_id)
        if entry is None:
            # Trimmed from the log before it could be sent (a backlog beyond FLASHWIRE_WEBHOOK_LOG_RETENTION).
            await self._settle(endpoint, entry_id, attempt, delivered=False, go_on=True)
            return "failed"
        message_id, body = entry
        result = await self._send(endpoint, message_id, body)
        self._count(result)
        record = await self._chain.delivery(endpoint_id, entry_id)
        record.attempts.append(
            Attempt(
                at=iso_from_ms(now_ms() - int(result.duration_s * 1000)),
                status=result.status,
                duration_ms=int(result.duration_s * 1000),
                error=result.error,
            )
        )
        last = attempt > len(self._settings.webhook_retry_schedule_s)
        if result.ok or result.gone or last:
            record.status = "delivered" if result.ok else "failed"
            await self._chain.record(endpoint_id, entry_id, record)
            await self._settle(endpoint, entry_id, attempt, delivered=result.ok, go_on=result.ok)
            if not result.ok:
                await self._disable(endpoint, attempt, result)
            return "delivered" if result.ok else "failed"
        await self._chain.record(endpoint_id, entry_id, record)
        due_ms = now_ms() + int(self.delay_s(attempt, result.retry_after_s) * 1000)
        if await self._chain.retry(endpoint_id, entry_id, attempt, due_ms):
            await self._chain.enqueue(endpoint_id, entry_id, attempt + 1, due_ms)
        return "retry"

    async def _send(self, endpoint: EndpointRecord, message_id: str, body: bytes) -> AttemptResult:
        """Sign (afresh, now) and send; a URL the rule refuses now is a refused attempt."""
        try:
            endpoint_url(endpoint.url, allow_private=self._settings.webhook_allow_private)
        except EndpointRefused as exc:
            return AttemptResult(None, f"refused: {exc}", 0.0, refused=True)
        headers = signed_headers(message_id, body, endpoint.signing_secrets(now_ms()), datetime.now(UTC))
        return await self._sender.post(endpoint.url, headers, body)

    def _count(self, result: AttemptResult) -> None:
        if result.ok:
            kind = "success"
        elif result.refused:
            kind = "refused"
        else:
            kind = "http_error" if result.status is not None else "network_error"
        self._metrics.attempts.labels(kind).inc()
        self._metrics.latency.observe(result.duration_s)

    async def _settle(
        self, endpoint: EndpointRecord, entry_id: str, attempt: int, *, delivered: bool, go_on: bool
    ) -> None:
        """The delivery is over: count it, and make the next message current; enqueue it if `go_on`
        (not when the endpoint is being disabled: then it waits for the endpoint to be enabled)."""
        self._metrics.deliveries.labels("delivered" if delivered else "failed").inc()
        nxt = await self._chain.advance(endpoint.id, entry_id, attempt)
        if nxt and go_on:
            await self._chain.enqueue(endpoint.id, nxt, 1, now_ms())

    async def _disable(self, endpoint: EndpointRecord, attempt: int, result: AttemptResult) -> None:
        if result.gone:
            reason, kind = "the endpoint answered 410 Gone", "gone"
        else:
            reason = f"still failing after {attempt} attempts; last: {result.error or 'no answer'}"
            kind = "failing"
        at = now_ms()

        def disable(current: EndpointRecord) -> EndpointRecord | None:
            if current.status == "disabled":
                return None
            return current.model_copy(
                update={
                    "status": "disabled",
                    "disabled_reason": reason,
                    "disabled_at_ms": at,
                    "updated_at_ms": at,
                }
            )

        await self._store.change(endpoint.id, disable)
        self._metrics.disabled.labels(kind).inc()
        log.warning("webhook endpoint %s (%s) disabled: %s", endpoint.id, endpoint.url, reason)


async def deliver_webhook(ctx: dict[str, Any], endpoint_id: str, entry_id: str, attempt: int) -> str:
    """arq job: one attempt of one endpoint's message (`Deliveries.attempt`)."""
    deliveries: Deliveries = ctx["flashwire_webhooks"]
    try:
        return await deliveries.attempt(endpoint_id, entry_id, attempt)
    except REDIS_DOWN:
        raise Retry(defer=REDIS_RETRY_S) from None
