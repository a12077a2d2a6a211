"""The worker's own Prometheus metrics, served over HTTP by the worker process.

A service node's /metrics shows publishing from the outside (workers alive, desk lag as Redis
shows it); these are the worker's own view, one endpoint per worker process. In a registry of
its own (not prometheus_client's global one), all prefixed `flashwire_worker_`:

- `desk_lag_seconds` (gauge): age of the oldest desk entry no worker has applied yet, on
  Redis's clock, measured with every heartbeat (workers/heartbeat.py, once a second); 0 when
  publishing is caught up. The same measure as the nodes' `flashwire_desk_lag_seconds`.
- `desk_actions_total{action}` (counter): desk entries this worker settled (applied, by
  itself or by another worker ahead of it, and acknowledged), by action type (`post`,
  `correct`, `retract`, `expire`, ...). Every entry is settled by the one worker that read it,
  so the sum over workers counts each action once.
- `desk_entries_applied_total` (counter): desk entries whose commit this worker won.
- `errors_total{kind}` (counter): `redis_unavailable` (one attempt of a part failed because
  Redis is away; one outage makes several), `redis_refused` (Redis refused a command),
  `unexpected` (any other error a part caught and retried: a bug).
- `redis_outages_total` (counter) and `redis_up` (gauge): outages as the log reports them
  (workers/outage.py: one when the first part loses Redis), and whether every part has it now.
- `arq_jobs_total{outcome}` (counter): arq's jobs (the release jobs and the every-second
  sweep) `complete`, `failed` or `retried`, over every arq Worker this process ran.

`FLASHWIRE_WORKER_METRICS_PORT` turns the endpoint on (0, the default, is off: workers on one
host each need a port of their own, so no default fits them all). It listens on
`FLASHWIRE_HOST`, like the service, and serves the metrics at any path (`/metrics` by
convention). The server is prometheus_client's own (a WSGI server on a daemon thread); its
metrics are thread-safe, and the few plain ints read from the worker's loop (arq's counters)
are read whole.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, Metric

log = logging.getLogger(__name__)

# See service/metrics.py: no `_created` series.
disable_created_metrics()  # type: ignore[no-untyped-call]

ERROR_KINDS = ("redis_unavailable", "redis_refused", "unexpected")
JOB_OUTCOMES = ("complete", "failed", "retried")
# An unreadable or unknown desk entry is counted under this action.
UNKNOWN_ACTION = "unknown"
SERVER_STOP_TIMEOUT_S = 2.0


class _JobCounts:
    """arq's job counters of each queue the worker runs, read when scraped (workers/arq_runner.py)."""

    def __init__(self) -> None:
        self.readers: dict[str, Callable[[], dict[str, int]]] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "flashwire_worker_arq_jobs",
            "arq jobs this worker ran, by queue (scheduled: embargo releases and the every-second"
            " sweep; push: fan-out batches; webhooks: deliveries) and outcome.",
            labels=["queue", "outcome"],
        )
        for queue, read in self.readers.items():
            counts = read()
            for outcome in JOB_OUTCOMES:
                family.add_metric([queue, outcome], counts.get(outcome, 0))
        yield family


class WorkerMetrics:
    """The metrics one worker process keeps; each part is handed this object."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._job_counts = _JobCounts()
        self.registry.register(self._job_counts)
        self.desk_lag = Gauge(
            "flashwire_worker_desk_lag_seconds",
            "Age of the oldest desk entry no worker has applied yet (Redis clock; 0 when caught up).",
            registry=self.registry,
        )
        self.desk_actions = Counter(
            "flashwire_worker_desk_actions",
            "Desk entries this worker settled (applied and acknowledged), by action type.",
            ["action"],
            registry=self.registry,
        )
        self.desk_entries_applied = Counter(
            "flashwire_worker_desk_entries_applied",
            "Desk entries whose commit this worker won.",
            registry=self.registry,
        )
        self.errors = Counter(
            "flashwire_worker_errors",
            "Errors the worker's parts caught and waited out or retried, by kind.",
            ["kind"],
            registry=self.registry,
        )
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # every kind shows, at 0, from the start
        self.redis_outages = Counter(
            "flashwire_worker_redis_outages",
            "Redis outages this worker went through (one per 'Redis unavailable' warning).",
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "flashwire_worker_redis_up",
            "1 while every part of the worker reaches Redis, 0 while any waits for it.",
            registry=self.registry,
        )
        self.redis_up.set(1)
        self.push_sends = Counter(
            "flashwire_worker_push_sends",
            "Push sends this worker made, by platform and outcome (accepted, gone, retry, failed),"
            " and targets it settled without sending (outcome capped, quiet, expired).",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.push_send_seconds = Histogram(
            "flashwire_worker_push_send_seconds",
            "Time from a send's start to the push service's answer, by platform.",
            ["platform"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.push_fanout_seconds = Histogram(
            "flashwire_worker_push_fanout_seconds",
            "Time from a line's acceptance to the end of each push batch of it (this worker's).",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=self.registry,
        )
        self.push_targets_removed = Counter(
            "flashwire_worker_push_targets_removed",
            "Registrations removed because their push service said the target is gone, by platform.",
            ["platform"],
            registry=self.registry,
        )

    def count_jobs(self, read: Callable[[], dict[str, int]], queue: str = "scheduled") -> None:
        """Report the job counts of one arq queue, read by `read()` at each scrape."""
        self._job_counts.readers[queue] = read

    def error(self, kind: str) -> None:
        """Count one error of `kind` (one of ERROR_KINDS)."""
        self.errors.labels(kind).inc()


class MetricsServer:
    """prometheus_client's HTTP server for one registry, started and stopped with the worker."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        self._registry = registry
        self._port = port
        self._host = host
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; OSError if the port cannot be bound (the worker then refuses to start)."""
        self._server, self._thread = start_http_server(self._port, self._host, self._registry)
        log.info("worker metrics on http://%s:%d/metrics", self._host, self._port)

    def stop(self) -> None:
        """Stop serving and close the socket, waiting at most SERVER_STOP_TIMEOUT_S (the server
        notices within its 0.5 s poll interval; its thread is a daemon either way)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        # shutdown() waits for serve_forever() to return: bounded here, like the worker's stop.
        stopper = threading.Thread(target=server.shutdown, name="worker-metrics-stop", daemon=True)
        stopper.start()
        stopper.join(SERVER_STOP_TIMEOUT_S)
        server.server_close()
        if thread is not None:
            thread.join(SERVER_STOP_TIMEOUT_S)
