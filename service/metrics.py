"""This node's Prometheus metrics, made with prometheus_client in a registry of its own.

A registry per application (not prometheus_client's global one), so that tests and
several apps in one process never collide. What /metrics shows, all prefixed `flashwire_`:

- the hub's state, read when scraped (`_HubCollector`): gauges `connections`,
  `subscriptions`, `outbox_frames`, `direct_writers`; counters `events_read_total`,
  `deliveries_total`, `direct_frames_total`, `direct_writes_total`, `slow_closed_total`, `replay_reads_total`,
  `snapshot_reads_total`, `replay_from_ring_total`, `redis_errors_total`,
  `history_resets_total`. `direct_writers` says how many connections are on the fast path
  (service/wire.py, service/sse_wire.py); `direct_frames_total` that frames really went that way;
- publishing as Redis shows it, read by the handler just before rendering
  (`_PublishingCollector`): gauges `redis_up`, `workers_alive`, `desk_lag_seconds` (the last
  two are left out, not reported as 0, when Redis cannot be read);
- two latency histograms (`DeliveryLatency`): `post_to_ticker_seconds` and
  `ticker_to_socket_seconds`;
- refusals at the node's edge (`EdgeCounts`, read when scraped): counters
  `sockets_refused_total` (sockets closed at FLASHWIRE_MAX_SOCKETS),
  `heads_refused_total{status}` (request heads answered 400, 408, 414 or 431 before the
  application), `readers_refused_per_client_total{protocol}` (readers refused at
  FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT) and `ping_limit_closed_total` (WebSocket readers closed
  1008 for too many pings). The first two are counted by uvicorn's protocol classes
  (service/server_limits.py, service/ws_protocol.py), which find the counts on the ASGI
  application they serve (`edge_counts_of`).

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
        for name, documentation, counts in (
            (
                "flashwire_readers",
                "Readers connected to this node, per edition (WebSocket and SSE; desks excluded; "
                "a reader of two editions counts in each).",
                hub.readers,
            ),
            (
                "flashwire_desks",
                "Desk ticker connections (role=desk) on this node, per edition.",
                hub.desks,
            ),
        ):
            family = GaugeMetricFamily(name, documentation, labels=["edition"])
            for edition, count in counts.items():
                family.add_metric([edition], count)
            yield family
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
                "flashwire_direct_writes",
                "Writes that carried those frames: one per reader per dispatch round, so fewer than "
                "the frames when a burst brought several events at once.",
                stats.direct_writes,
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


class EdgeCounts:
    """Refusals at the node's edge, as plain ints, counted where they happen and read when scraped.

    One per application: `ReaderSocketDispatch` (service/ws.py) makes it and keeps it as its
    `edge_counts`, where uvicorn's protocol classes find it (`edge_counts_of`), and as the Starlette
    application's `state.edge_counts`, where the endpoints do.
    """

    __slots__ = ("heads_refused", "ping_limit_closed", "readers_refused_per_client", "sockets_refused")

    # The statuses a request head is refused with before the application (service/server_limits.py).
    HEAD_STATUSES = (400, 408, 414, 431)
    PROTOCOLS = ("ws", "sse")

    def __init__(self) -> None:
        self.sockets_refused = 0
        self.heads_refused = dict.fromkeys(self.HEAD_STATUSES, 0)
        self.readers_refused_per_client = dict.fromkeys(self.PROTOCOLS, 0)
        self.ping_limit_closed = 0

    def head_refused(self, status: int) -> None:
        """Count a request head refused with `status` (one of HEAD_STATUSES)."""
        self.heads_refused[status] = self.heads_refused.get(status, 0) + 1

    def reader_refused_per_client(self, protocol: str) -> None:
        """Count a reader refused at FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT (`protocol`: "ws", "sse")."""
        self.readers_refused_per_client[protocol] = self.readers_refused_per_client.get(protocol, 0) + 1


def edge_counts_of(app: object) -> EdgeCounts:
    """The counts of `app`: the ASGI application uvicorn serves (`config.app`, the
    ReaderSocketDispatch), or the Starlette application inside it (`state.edge_counts`); for an
    application that keeps none, counts of their own that nothing reads."""
    counts = getattr(app, "edge_counts", None)
    if counts is None:
        counts = getattr(getattr(app, "state", None), "edge_counts", None)
    return counts if isinstance(counts, EdgeCounts) else EdgeCounts()


class _EdgeCollector:
    """The edge's refusal counters (`EdgeCounts`), read when scraped."""

    def __init__(self, counts: EdgeCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        yield CounterMetricFamily(
            "flashwire_sockets_refused",
            "Client sockets closed as soon as accepted because the node held FLASHWIRE_MAX_SOCKETS.",
            value=counts.sockets_refused,
        )
        heads = CounterMetricFamily(
            "flashwire_heads_refused",
            "Request heads refused before the application, by status: 400 malformed, 408 not complete "
            "within FLASHWIRE_HEADER_TIMEOUT_S, 414 target too long, 431 head too large.",
            labels=["status"],
        )
        for status, value in sorted(counts.heads_refused.items()):
            heads.add_metric([str(status)], value)
        yield heads
        readers = CounterMetricFamily(
            "flashwire_readers_refused_per_client",
            "Reader connections refused because their client address held "
            "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT (WebSocket 1013, SSE 429), by protocol.",
            labels=["protocol"],
        )
        for protocol, value in sorted(counts.readers_refused_per_client.items()):
            readers.add_metric([protocol], value)
        yield readers
        yield CounterMetricFamily(
            "flashwire_ping_limit_closed",
            "WebSocket readers closed with 1008 for sending too many pings (protocol and application "
            "pings together).",
            value=counts.ping_limit_closed,
        )


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

    def __init__(self, hub: Hub, edge: EdgeCounts | None = None) -> None:
        self.registry = CollectorRegistry()
        self.latency = DeliveryLatency(self.registry)
        self.registry.register(_HubCollector(hub))
        self.registry.register(_EdgeCollector(edge if edge is not None else EdgeCounts()))
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
