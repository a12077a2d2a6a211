"""The delivery model: what every reader must have been sent, and a checker that compares.

Pure (no I/O, no clock, no randomness), so the fault run (tests/fault_run.py), the soak
(bench/soak.py) and the checker's own unit tests share one definition of "correct":

1. From the acknowledged editorial actions in desk order, each edition's ticker is computed
   (post -> `line` v1, correction -> `update` v+1 with `previous`, retraction -> `retract`
   "killed" v+1) and compared with the ticker read back from Redis: no acknowledged action
   lost, none added, none reordered. The ticker then gives each expected event its cursor.
2. Per reader and edition, the filter rules of docs/protocol.md section 7 select what the
   reader must receive (a correction out of the filter is a `retract` "filtered" with the same
   cursor; into it, an `update` for an unknown id). The checker walks the reader's recorded
   messages, connection by connection, exactly as the server sent them (readers never
   deduplicate), and classifies every deviation: GAP, DUPLICATE, REORDER and the rest below.

The filter rules are written out here again rather than imported from service/events.py on
purpose: a checker that shares the server's code would share its bugs.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

Key = tuple[int, int]
ZERO: Key = (0, 0)
URGENCY_RANK = {"flash": 0, "urgent": 1, "routine": 2}
SNAPSHOT_MAX_LINES = 500

# Every kind of violation the checker reports, with what it means.
KINDS: dict[str, str] = {
    "GAP": "an event the reader's filter selects was skipped: the reader moved past it without receiving it",
    "DUPLICATE": "an event whose cursor the reader had already received arrived again",
    "REORDER": "an older, undelivered event arrived after a newer one (or after the snapshot covering it)",
    "CONTENT": "the event at the expected cursor differs from the model (type, line, version, text, reason)",
    "FILTER": "an event the reader's filter does not select was delivered",
    "UNKNOWN": "an event whose cursor is not in the edition's ticker",
    "SNAPSHOT": "a snapshot's lines or order differ from the filtered live lines at its cursor",
    "RESET": "a reset snapshot (no data was lost in this run, so there must be none)",
    "RESUME": "a plain snapshot where the reader's resume cursor should have been honoured",
    "SSE_ID": "an SSE id missing, incomplete or behind: a browser resuming from it would lose or repeat",
    "INCOMPLETE": "at the end the reader had not reached the edition's last selected event",
    "FINAL_STATE": "at the end the lines the reader holds differ from the expected ones",
    "PROTOCOL": "a message out of protocol order or malformed",
    "CLOSE": "a connection ended with an internal error (1011 'internal error', HTTP 5xx other than 503)",
    "TICKER": "the ticker read from Redis differs from the acknowledged actions in desk order",
}
# Kept per reader and kind in the report; the counts always cover all of them.
VIOLATIONS_KEPT_PER_READER_KIND = 20


def cursor_key(cursor: str) -> Key:
    """A cursor (`<ms>-<seq>` or `<ms>`) as a comparable pair; ValueError if malformed."""
    ms, sep, seq = cursor.partition("-")
    if not ms.isdigit() or (sep and not seq.isdigit()):
        raise ValueError(f"malformed cursor {cursor!r}")
    return int(ms), int(seq) if seq else 0


def format_key(key: Key) -> str:
    """The cursor text of a key."""
    return f"{key[0]}-{key[1]}"


def parse_cursor_set(value: str) -> dict[str, str]:
    """`en:<cursor>,ar:<cursor>` (an SSE id, a `since`) as {edition: cursor}; ValueError if malformed."""
    out: dict[str, str] = {}
    for part in value.split(","):
        edition, sep, cursor = part.partition(":")
        if not sep or not edition or edition in out:
            raise ValueError(f"malformed cursor set {value!r}")
        cursor_key(cursor)
        out[edition] = cursor
    return out


# -- lines, actions and ticker events --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineView:
    """What the checker compares of a line: enough to tell every version of it apart."""

    id: str
    version: int
    text: str
    topics: tuple[str, ...]
    urgency: str
    published_at: str
    pinned: bool = False

    @classmethod
    def from_json(cls, line: Mapping[str, Any]) -> LineView:
        """From a line object of the protocol (KeyError/TypeError/ValueError if malformed)."""
        return cls(
            id=str(line["id"]),
            version=int(line["version"]),
            text=str(line["text"]),
            topics=tuple(str(topic) for topic in line["topics"]),
            urgency=str(line["urgency"]),
            published_at=str(line["published_at"]),
            pinned=bool(line.get("pinned", False)),
        )


@dataclass(frozen=True, slots=True)
class Action:
    """One acknowledged editorial action; its `desk_id` (from the 201) is its place in desk order.

    A correction's `text`, `topics` and `urgency` are None when it left them unchanged.
    """

    desk_id: str
    kind: str  # "post", "correct" or "retract"
    line_id: str
    edition: str
    text: str | None = None
    topics: tuple[str, ...] | None = None
    urgency: str | None = None
    published_at: str | None = None  # a post's `accepted_at`: the line's publication time
    note: str = ""


@dataclass(frozen=True, slots=True)
class TickerEvent:
    """One event of an edition's ticker: the line as it leaves the event."""

    type: str  # "line", "update" or "retract"
    line: LineView
    previous: tuple[tuple[str, ...], str] | None = None  # update: (topics, urgency) before
    reason: str = ""  # retract: "killed"
    cursor: str = ""

    def signature(self) -> tuple[Any, ...]:
        """What must be equal between the model and Redis (everything but the cursor)."""
        line = self.line
        return (
            self.type,
            line.id,
            line.version,
            line.text,
            line.topics,
            line.urgency,
            self.previous,
            self.reason,
        )


def event_from_entry(cursor: str, event_type: str, data: str | bytes) -> TickerEvent:
    """A ticker stream entry (fields `t` = type, `d` = JSON body) as a TickerEvent."""
    body = orjson.loads(data)
    previous = body.get("previous") if event_type == "update" else None
    return TickerEvent(
        type=event_type,
        line=LineView.from_json(body["line"]),
        previous=(tuple(previous["topics"]), str(previous["urgency"]))
        if isinstance(previous, dict)
        else None,
        reason=str(body.get("reason", "")) if event_type == "retract" else "",
        cursor=cursor,
    )


def desk_order(actions: Iterable[Action]) -> list[Action]:
    """The actions sorted by their desk stream id."""
    return sorted(actions, key=lambda action: cursor_key(action.desk_id))


def expected_tickers(actions: Iterable[Action]) -> dict[str, list[TickerEvent]]:
    """Each edition's ticker as the acknowledged actions make it, in desk order (no cursors yet).

    The same guards as the worker's: an action on a line that is not live makes no event.
    """
    lines: dict[str, LineView] = {}
    live: set[str] = set()
    out: dict[str, list[TickerEvent]] = {}
    for action in desk_order(actions):
        events = out.setdefault(action.edition, [])
        current = lines.get(action.line_id)
        if action.kind == "post":
            if current is not None:
                continue
            assert action.text is not None and action.topics is not None and action.urgency is not None
            line = LineView(
                id=action.line_id,
                version=1,
                text=action.text,
                topics=action.topics,
                urgency=action.urgency,
                published_at=action.published_at or "",
            )
            lines[line.id] = line
            live.add(line.id)
            events.append(TickerEvent("line", line))
        elif action.kind == "correct":
            if current is None or action.line_id not in live:
                continue
            line = replace(
                current,
                version=current.version + 1,
                text=current.text if action.text is None else action.text,
                topics=current.topics if action.topics is None else action.topics,
                urgency=current.urgency if action.urgency is None else action.urgency,
            )
            lines[line.id] = line
            events.append(TickerEvent("update", line, previous=(current.topics, current.urgency)))
        elif action.kind == "retract":
            if current is None or action.line_id not in live:
                continue
            line = replace(current, version=current.version + 1, pinned=False)
            lines[line.id] = line
            live.discard(line.id)
            events.append(TickerEvent("retract", line, reason="killed"))
        else:
            raise ValueError(f"unknown action kind {action.kind!r}")
    return out


# -- filters and what they select ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReaderFilter:
    """A reader's subscription: editions, any-of topics (empty = all), minimum urgency."""

    editions: tuple[str, ...]
    topics: frozenset[str] = frozenset()
    min_urgency: str = "routine"

    def matches(self, topics: Iterable[str], urgency: str) -> bool:
        """docs/protocol.md section 7: urgency at least `min_urgency`, and any requested topic."""
        if URGENCY_RANK[urgency] > URGENCY_RANK[self.min_urgency]:
            return False
        return not self.topics or not self.topics.isdisjoint(topics)

    def matches_line(self, line: LineView) -> bool:
        """The same test on a line."""
        return self.matches(line.topics, line.urgency)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event as a reader with a given filter must receive it."""

    cursor: str
    key: Key
    type: str  # "line", "update" or "retract"
    line: LineView
    reason: str = ""  # retract: "killed" or "filtered"


def select(event: TickerEvent, flt: ReaderFilter) -> Delivery | None:
    """What a reader with `flt` receives for `event` (the table of docs/protocol.md section 7)."""
    key = cursor_key(event.cursor)
    if flt.matches_line(event.line):
        return Delivery(event.cursor, key, event.type, event.line, event.reason)
    if event.type == "update" and event.previous is not None and flt.matches(*event.previous):
        return Delivery(event.cursor, key, "retract", event.line, "filtered")
    return None


def apply_delivery(held: dict[str, LineView], delivery_type: str, line: LineView) -> None:
    """What a client does with an event: insert or replace on line/update, remove on retract."""
    if delivery_type == "retract":
        held.pop(line.id, None)
    else:
        held[line.id] = line


class Selection:
    """The deliveries one filter selects from one edition's ticker, in ticker order."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.deliveries = deliveries
        self.keys = [delivery.key for delivery in deliveries]
        self.by_key = {delivery.key: delivery for delivery in deliveries}

    def between(self, after: Key, upto: Key) -> list[Delivery]:
        """The deliveries with after < cursor <= upto."""
        return self.deliveries[bisect.bisect_right(self.keys, after) : bisect.bisect_right(self.keys, upto)]

    @property
    def last_key(self) -> Key | None:
        """The cursor of the last selected event, if any."""
        return self.keys[-1] if self.keys else None


class Timeline:
    """One edition's ticker as read from Redis: events with cursors, states and selections."""

    def __init__(self, edition: str, events: Sequence[TickerEvent]) -> None:
        self.edition = edition
        self.events = list(events)
        self.keys = [cursor_key(event.cursor) for event in self.events]
        self.index = {key: i for i, key in enumerate(self.keys)}
        # Where each line was published (its `line` event): snapshots list newest first by this.
        # Not by `published_at`: a node stamps that before the desk accepts the post, so two posts
        # accepted on two nodes within a millisecond may carry times in the other order.
        self.published = {
            event.line.id: key
            for event, key in zip(self.events, self.keys, strict=True)
            if event.type == "line"
        }
        # States after the first n events, cached for the n that snapshots ask about.
        self._states: dict[int, dict[str, LineView]] = {0: {}}
        self._state_ns: list[int] = [0]
        self._selections: dict[tuple[frozenset[str], str], Selection] = {}

    def count_upto(self, key: Key) -> int:
        """How many events have a cursor <= key."""
        return bisect.bisect_right(self.keys, key)

    def state_after(self, count: int) -> dict[str, LineView]:
        """The live lines after the first `count` events (do not modify the result)."""
        cached = self._states.get(count)
        if cached is not None:
            return cached
        base = self._state_ns[bisect.bisect_right(self._state_ns, count) - 1]
        state = dict(self._states[base])
        for event in self.events[base:count]:
            apply_delivery(state, event.type, event.line)
        self._states[count] = state
        bisect.insort(self._state_ns, count)
        return state

    def snapshot_lines(self, key: Key, flt: ReaderFilter, cap: int) -> list[LineView]:
        """The snapshot at cursor `key`: live lines passing the filter, pinned first then newest
        first by publication, at most `cap` of them (the cap applies after filtering)."""
        state = self.state_after(self.count_upto(key))
        lines = [line for line in state.values() if flt.matches_line(line)]
        lines.sort(key=lambda line: (not line.pinned, self._newest_first(line.id)))
        return lines[:cap]

    def _newest_first(self, line_id: str) -> Key:
        ms, seq = self.published.get(line_id, ZERO)
        return -ms, -seq

    def selection(self, flt: ReaderFilter) -> Selection:
        """What a reader with `flt` must receive from this edition (cached per filter)."""
        cache_key = (flt.topics, flt.min_urgency)
        found = self._selections.get(cache_key)
        if found is None:
            chosen = (select(event, flt) for event in self.events)
            found = Selection([delivery for delivery in chosen if delivery is not None])
            self._selections[cache_key] = found
        return found


def compare_tickers(
    expected: Mapping[str, Sequence[TickerEvent]], actual: Mapping[str, Sequence[TickerEvent]]
) -> list[Violation]:
    """TICKER violations: where Redis's tickers differ from the acknowledged actions."""
    violations = []
    for edition in sorted(set(expected) | set(actual)):
        want, got = list(expected.get(edition, ())), list(actual.get(edition, ()))
        for i, (a, b) in enumerate(zip(want, got, strict=False)):
            if a.signature() != b.signature():
                violations.append(
                    Violation(
                        "TICKER",
                        "-",
                        edition,
                        b.cursor,
                        f"entry {i}: expected {a.signature()}, Redis has {b.signature()}",
                    )
                )
                break
        if len(want) != len(got):
            violations.append(
                Violation(
                    "TICKER",
                    "-",
                    edition,
                    got[-1].cursor if got else "",
                    f"{len(want)} events expected from the acknowledged actions, Redis has {len(got)}",
                )
            )
    return violations


# -- what the harness records ----------------------------------------------------------------


@dataclass(slots=True)
class Connection:
    """One connection of a reader, as recorded: every message exactly as the server sent it."""

    transport: str  # "ws" or "sse"
    node: str
    # The cursors the reader asked to resume from: WebSocket `since`, SSE `Last-Event-ID`.
    resume: dict[str, str] = field(default_factory=dict)
    # (frame text, SSE `id` field of that event or None); an SSE event with an id and no data
    # is recorded with an empty frame, because it still moves the browser's Last-Event-ID.
    messages: list[tuple[bytes, str | None]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    http_status: int | None = None
    error: str = ""


@dataclass(slots=True)
class ReaderRecord:
    """A reader: its subscription and its connections in order."""

    name: str
    transport: str
    filter: ReaderFilter
    connections: list[Connection] = field(default_factory=list)


# -- the checker -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """One deviation from the model, located precisely enough to find it in the recording."""

    kind: str
    reader: str
    edition: str
    cursor: str
    detail: str
    connection: int = -1
    message: int = -1

    def __str__(self) -> str:
        where = f" conn {self.connection} msg {self.message}" if self.connection >= 0 else ""
        at = f"reader={self.reader} edition={self.edition} cursor={self.cursor}{where}"
        return f"{self.kind} {at}: {self.detail}"


@dataclass
class Report:
    """The checker's verdict and what it looked at."""

    violations: list[Violation] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    readers: int = 0
    connections: int = 0
    messages: int = 0
    deliveries: int = 0  # events received in order and checked against the model
    snapshots: int = 0
    reset_snapshots: int = 0
    ticker_events: int = 0
    actions: int = 0

    @property
    def ok(self) -> bool:
        """No violation of any kind."""
        return not self.counts

    def kinds(self) -> set[str]:
        """The kinds of violation found."""
        return set(self.counts)

    def add(self, violation: Violation, keep: bool = True) -> None:
        """Count a violation (and keep it for the report, unless told not to)."""
        self.counts[violation.kind] += 1
        if keep:
            self.violations.append(violation)

    def summary(self, limit: int = 12) -> str:
        """Figures, counts per kind and the first violations."""
        head = (
            f"{self.actions} actions, {self.ticker_events} ticker events, {self.readers} readers, "
            f"{self.connections} connections, {self.messages} messages, {self.deliveries} deliveries "
            f"checked, {self.snapshots} snapshots ({self.reset_snapshots} reset)"
        )
        if self.ok:
            return head + "; no violation"
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.counts.items()))
        first = "\n".join(f"  {violation}" for violation in self.violations[:limit])
        return f"{head}\nviolations: {kinds}\nfirst {min(limit, len(self.violations))}:\n{first}"


@dataclass
class _Track:
    """The checker's state for one reader and edition."""

    timeline: Timeline
    selection: Selection
    pos: Key | None = None  # where the reader stands: resuming from here must lose nothing
    delivered: set[Key] = field(default_factory=set)
    lost: set[Key] = field(default_factory=set)  # reported as a GAP already
    # Passed over by the message at the index given; may yet come (then it is a reorder).
    pending: dict[Key, tuple[Delivery, int]] = field(default_factory=dict)
    held: dict[str, LineView] = field(default_factory=dict)  # what the client shows, from its messages
    expected_held: dict[str, LineView] = field(default_factory=dict)
    expected_pos: Key | None = None  # expected_held reflects the selection up to here


class _ReaderCheck:
    """Walks one reader's connections and messages against the model."""

    def __init__(
        self,
        record: ReaderRecord,
        timelines: Mapping[str, Timeline],
        report: Report,
        *,
        cap: int,
        allow_resets: bool,
    ) -> None:
        self.record = record
        self.report = report
        self.cap = cap
        self.allow_resets = allow_resets
        self.tracks = {
            edition: _Track(timelines[edition], timelines[edition].selection(record.filter))
            for edition in record.filter.editions
        }
        self._kept: Counter[str] = Counter()
        self._conn = -1
        self._msg = -1

    def flag(
        self, kind: str, edition: str, cursor: str | Key, detail: str, message: int | None = None
    ) -> None:
        text = format_key(cursor) if isinstance(cursor, tuple) else cursor
        self._kept[kind] += 1
        where = self._msg if message is None else message
        self.report.add(
            Violation(kind, self.record.name, edition, text, detail, self._conn, where),
            keep=self._kept[kind] <= VIOLATIONS_KEPT_PER_READER_KIND,
        )

    # -- positions -------------------------------------------------------------------------

    def _advance_expected(self, track: _Track, upto: Key) -> None:
        """Bring the expected client state up to `upto` (it only ever moves forward)."""
        if track.expected_pos is None or upto <= track.expected_pos:
            return
        for delivery in track.selection.between(track.expected_pos, upto):
            apply_delivery(track.expected_held, delivery.type, delivery.line)
        track.expected_pos = upto

    def _move(self, edition: str, key: Key, why: str) -> None:
        """The reader's position moves to `key` by a resume cursor or an SSE id: every selected
        event it passes over without having received it is lost to the reader."""
        track = self.tracks[edition]
        if track.pos is None:
            kind = "SSE_ID" if why == "SSE id" else "PROTOCOL"
            self.flag(kind, edition, key, f"{why} names an edition the reader has no position in")
            return
        if key > track.pos:
            for delivery in track.selection.between(track.pos, key):
                if delivery.key not in track.delivered and delivery.key not in track.lost:
                    track.pending.pop(delivery.key, None)
                    track.lost.add(delivery.key)
                    self.flag(
                        "GAP",
                        edition,
                        delivery.cursor,
                        f"{delivery.type} {delivery.line.id} passed by the {why}",
                    )
            track.pos = key
            self._advance_expected(track, key)
        elif key < track.pos:
            if why == "SSE id":
                self.flag(
                    "SSE_ID", edition, key, f"id is behind the reader's position {format_key(track.pos)}"
                )
            track.pos = key

    def _end_connection(self) -> None:
        """What was passed over on a connection can never come in order any more: a gap."""
        for edition, track in self.tracks.items():
            for key, (delivery, index) in sorted(track.pending.items()):
                self.flag("GAP", edition, key, f"{delivery.type} {delivery.line.id} was skipped", index)
                track.lost.add(key)
            track.pending.clear()

    # -- messages --------------------------------------------------------------------------

    def run(self) -> None:
        for index, connection in enumerate(self.record.connections):
            self._conn, self._msg = index, -1
            self._connection(connection)
            self._msg = -1
            self._end_connection()
        self._conn = -1
        self._final()

    def _connection(self, connection: Connection) -> None:
        self.report.connections += 1
        given: dict[str, str] = {}
        for edition, cursor in connection.resume.items():
            if edition not in self.tracks:
                self.flag("PROTOCOL", edition, cursor, "resume cursor for an edition not subscribed")
                continue
            try:
                key = cursor_key(cursor)
            except ValueError:
                self.flag("PROTOCOL", edition, cursor, "malformed resume cursor")
                continue
            given[edition] = cursor
            self._move(edition, key, "resume cursor")
        snapshotted: set[str] = set()
        subscribed = False
        for index, (raw, sse_id) in enumerate(connection.messages):
            self._msg = index
            self.report.messages += 1
            kind = ""
            if raw:
                try:
                    message = orjson.loads(raw)
                    kind = str(message["type"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    self.flag("PROTOCOL", "-", "", f"not a protocol message: {raw[:120]!r}")
                    continue
                if index == 0 and kind != "hello":
                    self.flag("PROTOCOL", "-", "", f"first message is {kind!r}, not hello")
                if kind == "subscribed":
                    subscribed = True
                    if sorted(message.get("resuming", ())) != sorted(given):
                        self.flag(
                            "PROTOCOL",
                            "-",
                            "",
                            f"subscribed.resuming {message.get('resuming')} != {sorted(given)}",
                        )
                elif kind in ("snapshot", "line", "update", "retract"):
                    if not subscribed:
                        self.flag("PROTOCOL", str(message.get("edition")), "", f"{kind} before subscribed")
                    if kind == "snapshot":
                        self._snapshot(message, given, snapshotted)
                    else:
                        self._event(kind, message)
            if connection.transport == "sse" and index > 0:
                self._sse_id(sse_id, given, snapshotted)
        if connection.close_code == 1011 and connection.close_reason == "internal error":
            self.flag("CLOSE", "-", "", "closed 1011 internal error")
        if (
            connection.http_status is not None
            and connection.http_status >= 500
            and connection.http_status != 503
        ):
            self.flag("CLOSE", "-", "", f"HTTP {connection.http_status}")

    def _snapshot(self, message: Mapping[str, Any], given: Mapping[str, str], snapshotted: set[str]) -> None:
        edition = str(message.get("edition"))
        track = self.tracks.get(edition)
        if track is None:
            self.flag("PROTOCOL", edition, "", "snapshot of an edition not subscribed")
            return
        cursor = str(message.get("cursor"))
        try:
            key = cursor_key(cursor)
            lines = [LineView.from_json(line) for line in message["lines"]]
        except (ValueError, KeyError, TypeError):
            self.flag("PROTOCOL", edition, cursor, "malformed snapshot")
            return
        self.report.snapshots += 1
        snapshotted.add(edition)
        reset = message.get("reset") is True
        if reset:
            self.report.reset_snapshots += 1
            if not self.allow_resets:
                self.flag("RESET", edition, cursor, f"reset snapshot: {message.get('reason')}")
        elif edition in given:
            self.flag("RESUME", edition, cursor, f"plain snapshot although resuming from {given[edition]}")
        if key != ZERO and key not in track.timeline.index:
            self.flag("SNAPSHOT", edition, cursor, "snapshot cursor names no ticker entry")
        self._check_snapshot_lines(edition, cursor, key, lines)
        if track.pos is not None and key > track.pos and not (reset and self.allow_resets):
            for delivery in track.selection.between(track.pos, key):
                accounted = delivery.key in track.delivered or delivery.key in track.lost
                if not accounted and delivery.key not in track.pending:
                    track.lost.add(delivery.key)
                    self.flag(
                        "GAP",
                        edition,
                        delivery.cursor,
                        f"{delivery.type} {delivery.line.id} covered by a snapshot",
                    )
        for pending_key, (delivery, index) in sorted(track.pending.items()):
            self.flag("GAP", edition, pending_key, f"{delivery.type} {delivery.line.id} was skipped", index)
            track.lost.add(pending_key)
        track.pending.clear()
        track.pos = key
        track.held = {line.id: line for line in lines}
        expected = track.timeline.snapshot_lines(key, self.record.filter, self.cap)
        track.expected_held = {line.id: line for line in expected}
        track.expected_pos = key

    def _check_snapshot_lines(self, edition: str, cursor: str, key: Key, lines: list[LineView]) -> None:
        expected = self.tracks[edition].timeline.snapshot_lines(key, self.record.filter, self.cap)
        want = {line.id: line for line in expected}
        got = {line.id: line for line in lines}
        problems = []
        if len(got) != len(lines):
            problems.append("a line listed twice")
        missing = [line_id for line_id in want if line_id not in got]
        extra = [line_id for line_id in got if line_id not in want]
        stale = [line_id for line_id in got if line_id in want and got[line_id] != want[line_id]]
        if missing:
            problems.append(f"{len(missing)} of {len(want)} expected lines missing (e.g. {missing[:3]})")
        if extra:
            problems.append(f"{len(extra)} unexpected lines (e.g. {extra[:3]})")
        if stale:
            line_id = stale[0]
            problems.append(f"{len(stale)} lines differ (e.g. {got[line_id]} != {want[line_id]})")
        published = self.tracks[edition].timeline.published
        for before, after in itertools.pairwise(lines):
            older = published.get(before.id, ZERO) < published.get(after.id, ZERO)
            if (before.pinned, after.pinned) == (False, True) or (before.pinned == after.pinned and older):
                problems.append(f"order: {before.id} before the newer {after.id}")
                break
        if problems:
            self.flag("SNAPSHOT", edition, cursor, "; ".join(problems))

    def _event(self, kind: str, message: Mapping[str, Any]) -> None:
        edition = str(message.get("edition"))
        track = self.tracks.get(edition)
        cursor = str(message.get("cursor"))
        if track is None:
            self.flag("PROTOCOL", edition, cursor, f"{kind} of an edition not subscribed")
            return
        try:
            key = cursor_key(cursor)
            line = LineView.from_json(message["line"])
        except (ValueError, KeyError, TypeError):
            self.flag("PROTOCOL", edition, cursor, f"malformed {kind}")
            return
        if track.pos is None:
            self.flag("PROTOCOL", edition, cursor, f"{kind} before the edition's snapshot or resume")
            return
        if key in track.delivered:
            self.flag("DUPLICATE", edition, cursor, f"{kind} {line.id} v{line.version} again")
            return
        if key in track.pending:
            del track.pending[key]
            track.delivered.add(key)
            self.flag("REORDER", edition, cursor, f"{kind} {line.id} after a later cursor")
            return
        expected = track.selection.by_key.get(key)
        if expected is None:
            known = key in track.timeline.index
            self.flag(
                "FILTER" if known else "UNKNOWN",
                edition,
                cursor,
                f"{kind} {line.id} " + ("not selected by the filter" if known else "is not in the ticker"),
            )
            return
        if key <= track.pos:
            track.delivered.add(key)
            self.flag(
                "REORDER",
                edition,
                cursor,
                f"{kind} {line.id} older than the position {format_key(track.pos)}",
            )
            return
        for skipped in track.selection.between(track.pos, key)[:-1]:
            if skipped.key not in track.delivered and skipped.key not in track.lost:
                track.pending[skipped.key] = (skipped, self._msg)
        reason = str(message.get("reason", "")) if kind == "retract" else ""
        line_id = str(message.get("id")) if kind == "retract" else line.id
        if (
            (kind, line_id, reason) != (expected.type, expected.line.id, expected.reason)
            or line != expected.line
            or (kind == "update" and message.get("change") != "correction")
        ):
            self.flag("CONTENT", edition, cursor, f"got {kind} {reason} {line}, expected {expected}")
        track.delivered.add(key)
        track.pos = key
        self.report.deliveries += 1
        apply_delivery(track.held, kind, line)
        self._advance_expected(track, key)

    def _sse_id(self, sse_id: str | None, given: Mapping[str, str], snapshotted: set[str]) -> None:
        """Every SSE message after hello carries the complete cursor set (contract rule 4): each
        edition given a cursor, and each edition once its snapshot was sent."""
        required = set(given) | snapshotted
        if sse_id is None:
            if required:
                self.flag("SSE_ID", ",".join(sorted(required)), "", "message without an id")
            return
        try:
            cursors = parse_cursor_set(sse_id)
        except ValueError:
            self.flag("SSE_ID", "-", sse_id, "malformed id")
            return
        missing = required - set(cursors)
        if missing:
            self.flag("SSE_ID", ",".join(sorted(missing)), sse_id, "id lacks editions the reader stands in")
        for edition, cursor in cursors.items():
            if edition not in self.tracks:
                self.flag("SSE_ID", edition, sse_id, "id names an edition not subscribed")
                continue
            self._move(edition, cursor_key(cursor), "SSE id")

    def _final(self) -> None:
        for edition, track in self.tracks.items():
            if track.pos is None:
                self.flag("INCOMPLETE", edition, "", "never received a snapshot")
                continue
            last = track.selection.last_key
            if last is not None and last > track.pos:
                missing = track.selection.between(track.pos, last)
                self.flag(
                    "INCOMPLETE",
                    edition,
                    track.pos,
                    f"{len(missing)} selected events after the last position (up to {format_key(last)})",
                )
                self._advance_expected(track, last)
            if track.held != track.expected_held:
                missing_ids = sorted(set(track.expected_held) - set(track.held))
                extra_ids = sorted(set(track.held) - set(track.expected_held))
                stale = sorted(
                    line_id
                    for line_id in set(track.held) & set(track.expected_held)
                    if track.held[line_id] != track.expected_held[line_id]
                )
                self.flag(
                    "FINAL_STATE",
                    edition,
                    track.pos,
                    f"missing {missing_ids[:3]} ({len(missing_ids)}), "
                    f"extra {extra_ids[:3]} ({len(extra_ids)}), stale {stale[:3]} ({len(stale)})",
                )


def check(
    actions: Sequence[Action],
    tickers: Mapping[str, Sequence[TickerEvent]],
    readers: Sequence[ReaderRecord],
    *,
    snapshot_max_lines: int = SNAPSHOT_MAX_LINES,
    allow_resets: bool = False,
) -> Report:
    """Check the tickers against the acknowledged actions, then every reader against the tickers."""
    report = Report(actions=len(actions), readers=len(readers))
    for violation in compare_tickers(expected_tickers(actions), tickers):
        report.add(violation)
    editions = set(tickers) | {edition for reader in readers for edition in reader.filter.editions}
    timelines = {edition: Timeline(edition, tickers.get(edition, ())) for edition in editions}
    report.ticker_events = sum(len(timeline.events) for timeline in timelines.values())
    for reader in readers:
        _ReaderCheck(reader, timelines, report, cap=snapshot_max_lines, allow_resets=allow_resets).run()
    return report
