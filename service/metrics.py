"""This node's Prometheus metrics, made with prometheus_client in a registry of its own.

A registry per application (not prometheus_client's global one), so that tests and
several apps in one process never collide. What /metrics shows, all prefixed `flashwire_`:

- the hub's state, read when scraped (`_HubCollector`): gauges `connections`,
  `subscriptions`, `outbox_frames`, `direct_writers`; counters `events_read_total`,
  `deliveries_total`, `direct_frames_total`, `slow_closed_total`, `replay_reads_total`,
  `snapshot_reads_total`, `replay_from_ring_total`, `redis_errors_total`,
  `history_resets_total`. `direct_writers` says how many connections are on the fast path
  (service/wire.py); `direct_frames_total` that frames really went that way;
- publishing as Redis shows it, read by the handler just before rendering
  (`_PublishingCollector`): gauges `redis_up`, `workers_alive`, `desk_lag_seconds` (the last
  two are left out, not reported as 0, when Redis cannot be read);
- two latency histograms (`DeliveryLatency`): `post_to_ticker_seconds` and
  `ticker_to_socket_seconds`.

Latency buckets (`LATENCY_BUCKETS_S`): 1 ms to 10 s. A line normally crosses the desk, the
worker and a node in a few milliseconds, so the fine buckets sit there (1, 2.5, 5, 10, 25,
50 ms); a reader notices delays from about 100 ms, and a second or more means something is
stuck (a Redis failover, a worker restart), which the coarse buckets (0.1 to 10 s) keep
visible. The timestamps are whole milliseconds, so nothing finer than 1 ms is measurable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from flashwire.service.events import Event

if TYPE_CHECKING:
    from flashwire.service.health import Publishing
    from flashwire.service.hub import Hub

# The `_created` series would double the histograms' and counters' series for a value nobody
# here reads (the process start time is in the logs); this is process-wide in prometheus_client.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DeliveryLatency:
    """The two halves of a line's way to its readers, observed once per event on this node.

    - `post_to_ticker_seconds`: from the desk accepting the version (the event's `accepted_ms`)
      to the worker's XADD into the ticker (the ms part of the event's cursor);
    - `ticker_to_socket_seconds`: from that XADD to the frame being written to reader sockets
      on this node.

    Observed the first time a frame of an event is written to any reader here (`first_write`,
    called by the ReachRecorder for every write it counts): once per event per dispatch round,
    never once per reader, so a fan-out to 10,000 readers costs one observation. Only the events
    reach is counted for (publications and corrections) are timed, as they alone carry
    `accepted_ms`. The three clocks are the API node's, Redis's and this node's: skew between
    hosts shows up here (negative differences count as 0).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.post_to_ticker = Histogram(
            "flashwire_post_to_ticker_seconds",
            "Seconds from the desk accepting a line version to the worker adding it to the ticker "
            "(publications and corrections, observed once per event by each node).",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.ticker_to_socket = Histogram(
            "flashwire_ticker_to_socket_seconds",
            "Seconds from a ticker entry being added to its frame being written to this node's "
            "reader sockets (once per event, at the first write).",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        # Per edition, the newest event already timed: events of an edition reach readers in
        # cursor order, so this one comparison keeps a second write of an event from counting.
        self._timed: dict[str, tuple[int, int]] = {}

    def first_write(self, event: Event, sent_ms: int) -> None:
        """Observe both latencies of `event` if this is the first frame of it written here."""
        timed = self._timed.get(event.edition)
        if timed is not None and event.key <= timed:
            return
        self._timed[event.edition] = event.key
        ticker_ms = event.key[0]
        if event.accepted_ms:
            self.post_to_ticker.observe(max(0, ticker_ms - event.accepted_ms) / 1000)
        self.ticker_to_socket.observe(max(0, sent_ms - ticker_ms) / 1000)


class _HubCollector:
    """The hub's gauges and counters, read when scraped (the hub keeps plain ints)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, stats = self._hub, self._hub.stats
        gauges = [
            (
                "flashwire_connections",
                "Reader connections open on this node (WebSocket and SSE).",
                hub.connections,
            ),
            (
                "flashwire_subscriptions",
                "Subscriptions registered in the hub (a reader of two editions counts twice).",
                hub.subscriber_count,
            ),
            (
                "flashwire_outbox_frames",
                "Frames queued in readers' outboxes, not yet sent.",
                hub.outbox_total(),
            ),
            (
                "flashwire_direct_writers",
                "Reader connections the hub writes frames to directly (the fast path).",
                hub.direct_writers,
            ),
        ]
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        counters = [
            ("flashwire_events_read", "Ticker events read from Redis by this node.", stats.events_read),
            (
                "flashwire_deliveries",
                "Frames the hub handed to readers (written directly or queued).",
                stats.deliveries,
            ),
            (
                "flashwire_direct_frames",
                "Event frames the hub wrote straight to reader transports (the fast path), "
                "added once per event for all its readers.",
                stats.direct_frames,
            ),
            (
                "flashwire_slow_closed",
                "Readers closed for being too slow (outbox overflow).",
                stats.slow_closed,
            ),
            (
                "flashwire_replay_reads",
                "Replay pages read from Redis (coalesced per cursor).",
                stats.replay_reads,
            ),
            ("flashwire_snapshot_reads", "Snapshot reads from Redis.", stats.snapshot_reads),
            ("flashwire_replay_from_ring", "Replays served from the in-memory ring.", stats.replay_from_ring),
            (
                "flashwire_redis_errors",
                "Errors of the hub's ticker reader talking to Redis.",
                stats.redis_errors,
            ),
            (
                "flashwire_history_resets",
                "Times this node found the ticker history changed and sent reset snapshots.",
                stats.history_resets,
            ),
        ]
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)


class _PublishingCollector:
    """Publishing as Redis showed it to the scrape in progress (`None`: Redis could not be read)."""

    def __init__(self) -> None:
        self.publishing: Publishing | None = None

    def collect(self) -> Iterator[Metric]:
        publishing = self.publishing
        yield GaugeMetricFamily(
            "flashwire_redis_up",
            "1 if this node could read from Redis for this scrape, else 0.",
            value=int(publishing is not None),
        )
        if publishing is None:
            # Unknown values are left out (Prometheus treats a missing series as absent, not as 0).
            return
        yield GaugeMetricFamily(
            "flashwire_workers_alive",
            "Workers that sent a heartbeat in the last 5 s.",
            value=publishing.workers_alive,
        )
        yield GaugeMetricFamily(
            "flashwire_desk_lag_seconds",
            "Age of the oldest desk entry no worker has applied yet (0 when publishing is caught up).",
            value=publishing.desk_lag_s,
        )


class NodeMetrics:
    """Every metric of one application, and its rendering in the Prometheus text format."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry()
        self.latency = DeliveryLatency(self.registry)
        self.registry.register(_HubCollector(hub))
        self._publishing = _PublishingCollector()
        self.registry.register(self._publishing)

    def render(self, publishing: Publishing | None) -> bytes:
        """The text exposition (format 0.0.4), with `publishing` as just read (None: unreadable).

        Nothing awaits between setting `publishing` and rendering, so concurrent scrapes on the
        event loop never see each other's values.
        """
        self._publishing.publishing = publishing
        try:
            return generate_latest(self.registry)
        finally:
            self._publishing.publishing = None
