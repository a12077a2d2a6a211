"""The webhook metrics, on the worker's registry (workers/metrics.py), named `flashwire_worker_webhook_*`:

- `messages_total` (counter): messages this worker recorded in endpoints' logs (one per
  endpoint an event matched).
- `deliveries_total{outcome}` (counter): deliveries settled, `delivered` (a 2xx answer) or
  `failed` (given up at the end of the schedule, answered 410, or trimmed from the log unsent).
- `attempts_total{result}` (counter): attempts by result: `success` (2xx), `http_error` (any
  other status), `network_error` (no answer: refused, reset, timeout, TLS), `refused` (the
  address rule refused the endpoint's address).
- `attempt_seconds` (histogram): how long each attempt took, from the request to the answer.
- `endpoints_disabled_total{reason}` (counter): endpoints this worker disabled: `gone` (410),
  `failing` (still failing at the end of the retry schedule).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

DELIVERY_OUTCOMES = ("delivered", "failed")
ATTEMPT_RESULTS = ("success", "http_error", "network_error", "refused")
DISABLE_REASONS = ("gone", "failing")
# An attempt takes up to FLASHWIRE_WEBHOOK_TIMEOUT_S (15 s by default).
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)


class WebhookMetrics:
    """The counters and histogram above, registered on `registry` (every label shows from the start)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "flashwire_worker_webhook_messages",
            "Webhook messages this worker recorded in endpoints' logs.",
            registry=registry,
        )
        self.deliveries = Counter(
            "flashwire_worker_webhook_deliveries",
            "Webhook deliveries settled, by outcome (delivered, failed).",
            ["outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "flashwire_worker_webhook_attempts",
            "Webhook delivery attempts, by result (success, http_error, network_error, refused).",
            ["result"],
            registry=registry,
        )
        self.latency = Histogram(
            "flashwire_worker_webhook_attempt_seconds",
            "Duration of each webhook delivery attempt, request to answer.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.disabled = Counter(
            "flashwire_worker_webhook_endpoints_disabled",
            "Webhook endpoints this worker disabled, by reason (gone: 410; failing: retries exhausted).",
            ["reason"],
            registry=registry,
        )
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries.labels(outcome)
        for result in ATTEMPT_RESULTS:
            self.attempts.labels(result)
        for reason in DISABLE_REASONS:
            self.disabled.labels(reason)
