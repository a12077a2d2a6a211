"""The delivery model: the checker catches what it must, and the randomized fault run passes it.

The first tests drive the checker (tests/delivery_model.py) with a small synthetic scenario
and recordings that a correct server would produce, then inject a gap, a duplicate and a
reorder (and the other kinds) and assert that exactly that kind is reported. The last test is
the model-based randomized run against real processes (tests/fault_run.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.delivery_model import (
    Action,
    Connection,
    ReaderFilter,
    ReaderRecord,
    Report,
    TickerEvent,
    Timeline,
    apply_delivery,
    check,
    cursor_key,
    expected_tickers,
    select,
)
from tests.fault_run import RunConfig, SseParser, run_fault_model

# Heavy on CPU and timing: these run one after another on one test process (`-n 2 --dist loadgroup`).
pytestmark = pytest.mark.xdist_group("heavy")

# -- a small scenario, by hand ---------------------------------------------------------------

POLITICS = ReaderFilter(("en",), frozenset({"politics"}))
EVERYTHING = ReaderFilter(("en", "ar"))


def _actions() -> list[Action]:
    """en: A and B posted; A corrected out of politics, B into it (and raised to flash), B
    corrected again; C posted; A retracted; C corrected. ar: D posted, corrected into politics; E
    posted and retracted. Desk ids are 1000-0, 1001-0, ... in this order."""
    rows: list[tuple[str, str, str, dict[str, Any]]] = [
        ("post", "en-a", "en", {"text": "A1", "topics": ("politics",), "urgency": "urgent"}),
        ("post", "ar-d", "ar", {"text": "D1", "topics": ("mena",), "urgency": "urgent"}),
        ("post", "en-b", "en", {"text": "B1", "topics": ("economy",), "urgency": "routine"}),
        ("correct", "en-a", "en", {"text": "A2", "topics": ("economy",)}),
        ("correct", "en-b", "en", {"text": "B2", "topics": ("politics",), "urgency": "flash"}),
        ("correct", "en-b", "en", {"text": "B3"}),
        ("correct", "ar-d", "ar", {"text": "D2", "topics": ("politics", "mena")}),
        ("post", "en-c", "en", {"text": "C1", "topics": ("politics", "europe"), "urgency": "flash"}),
        ("post", "ar-e", "ar", {"text": "E1", "topics": ("politics",), "urgency": "routine"}),
        ("retract", "en-a", "en", {}),
        ("retract", "ar-e", "ar", {}),
        ("correct", "en-c", "en", {"text": "C2"}),
    ]
    actions = []
    for i, (kind, line_id, edition, fields) in enumerate(rows):
        published = f"2026-11-25T16:00:{i:02d}.000Z" if kind == "post" else None
        actions.append(Action(f"{1000 + i}-0", kind, line_id, edition, published_at=published, **fields))
    return actions


def _tickers(actions: list[Action]) -> dict[str, list[TickerEvent]]:
    """The tickers as a worker writes them. Every action of the scenario makes one event, whose
    cursor is 2000 + the action's place in desk order: one clock orders events across editions
    (the simulator's notion of time)."""
    out: dict[str, list[TickerEvent]] = {}
    for edition, events in expected_tickers(actions).items():
        places = [i for i, action in enumerate(actions) if action.edition == edition]
        out[edition] = [
            dataclasses.replace(event, cursor=f"{2000 + place}-0")
            for event, place in zip(events, places, strict=True)
        ]
    return out


# -- what a correct server sends --------------------------------------------------------------


def _line_json(line: Any, edition: str) -> dict[str, Any]:
    return {
        "id": line.id,
        "version": line.version,
        "edition": edition,
        "text": line.text,
        "urgency": line.urgency,
        "topics": list(line.topics),
        "status": "usable",
        "pinned": line.pinned,
        "published_at": line.published_at,
    }


def _serve(
    tickers: dict[str, list[TickerEvent]],
    flt: ReaderFilter,
    transport: str,
    since: dict[str, str],
    start_ms: int,
    stop_ms: int,
) -> Connection:
    """A connection opened at time `start_ms` and dropped after `stop_ms`, as a correct server
    serves it: snapshots or replays from `since`, then live events; SSE ids per the contract."""
    connection = Connection(transport, "sim", resume=dict(since))
    cursors = dict(since) if transport == "sse" else {}

    def send(message: dict[str, Any], with_id: bool = True) -> None:
        token = ",".join(f"{e}:{c}" for e, c in sorted(cursors.items()))
        sse_id = token if transport == "sse" and with_id and token else None
        connection.messages.append((orjson.dumps(message), sse_id))

    send({"type": "hello", "protocol": 1, "heartbeat_s": 15.0}, with_id=False)
    send({"type": "subscribed", "editions": list(flt.editions), "resuming": sorted(since)})
    timelines = {edition: Timeline(edition, tickers.get(edition, [])) for edition in flt.editions}

    def deliver(event: TickerEvent, edition: str) -> None:
        delivery = select(event, flt)
        if delivery is None:
            return
        message: dict[str, Any] = {
            "type": delivery.type,
            "edition": edition,
            "cursor": event.cursor,
            "line": _line_json(delivery.line, edition),
        }
        if delivery.type == "update":
            message["change"] = "correction"
        if delivery.type == "retract":
            message.update(id=delivery.line.id, reason=delivery.reason, note="")
        cursors[edition] = event.cursor
        send(message)

    for edition in flt.editions:
        timeline = timelines[edition]
        reached = [event.cursor for event in timeline.events if cursor_key(event.cursor)[0] <= start_ms]
        if edition in since:
            for event in timeline.events:
                if cursor_key(since[edition]) < cursor_key(event.cursor) <= (start_ms, 0):
                    deliver(event, edition)
        else:
            cursor = reached[-1] if reached else "0-0"
            lines = timeline.snapshot_lines(cursor_key(cursor), flt, 500)
            cursors[edition] = cursor
            send(
                {
                    "type": "snapshot",
                    "edition": edition,
                    "cursor": cursor,
                    "reset": False,
                    "lines": [_line_json(line, edition) for line in lines],
                }
            )
        if reached and cursor_key(reached[-1]) > cursor_key(cursors.get(edition, "0-0")):
            cursors[edition] = reached[-1]  # the catch-up ends at the hub's position
    live = sorted(
        (
            (event, edition)
            for edition in flt.editions
            for event in timelines[edition].events
            if start_ms < cursor_key(event.cursor)[0] <= stop_ms
        ),
        key=lambda pair: cursor_key(pair[0].cursor),
    )
    for event, edition in live:
        deliver(event, edition)
    return connection


def _reader(
    name: str, flt: ReaderFilter, transport: str, tickers: dict[str, list[TickerEvent]], drops: list[int]
) -> ReaderRecord:
    """A reader connected from before the first event, dropped at each time in `drops`, and
    resuming as its transport does (WebSocket: since = last cursors; SSE: the last id)."""
    record = ReaderRecord(name, transport, flt)
    times = [1999, *drops, 10_000]
    since: dict[str, str] = {}
    for start_ms, stop_ms in itertools.pairwise(times):
        connection = _serve(tickers, flt, transport, since, start_ms, stop_ms)
        record.connections.append(connection)
        since = {}
        for raw, sse_id in connection.messages:
            message = orjson.loads(raw)
            if "cursor" in message:
                since[message["edition"]] = message["cursor"]
            if transport == "sse" and sse_id:
                since = dict(part.split(":", 1) for part in sse_id.split(","))
    return record


def _scenario() -> tuple[list[Action], dict[str, list[TickerEvent]], list[ReaderRecord]]:
    actions = _actions()
    tickers = _tickers(actions)
    readers = [
        _reader("ws-all", EVERYTHING, "ws", tickers, [2004]),
        _reader("sse-all", EVERYTHING, "sse", tickers, [2003, 2008]),
        _reader("ws-politics", POLITICS, "ws", tickers, [2006]),
        _reader("sse-politics", ReaderFilter(("ar", "en"), frozenset({"politics"})), "sse", tickers, [2005]),
        _reader("ws-flash", ReaderFilter(("en",), min_urgency="flash"), "ws", tickers, []),
        _reader("sse-en", ReaderFilter(("en",)), "sse", tickers, []),
    ]
    return actions, tickers, readers


def _check(readers: list[ReaderRecord]) -> Report:
    actions = _actions()
    return check(actions, _tickers(actions), readers)


def _event_indices(record: ReaderRecord, connection: int = 0) -> list[int]:
    """Indices of the line/update/retract messages of one connection."""
    return [
        i
        for i, (raw, _) in enumerate(record.connections[connection].messages)
        if orjson.loads(raw)["type"] in ("line", "update", "retract")
    ]


def _cursor(record: ReaderRecord, index: int, connection: int = 0) -> str:
    return str(orjson.loads(record.connections[connection].messages[index][0])["cursor"])


# -- the model itself ------------------------------------------------------------------------


def test_model_follows_the_filter_table_of_the_protocol() -> None:
    """A politics reader of en gets A, then A's withdrawal, B moving in as an update, B's second
    correction, C and its correction, and no kill of A (withdrawn already); its snapshot at the
    end is C then B (newest first)."""
    actions = _actions()
    timeline = Timeline("en", _tickers(actions)["en"])
    got = [(d.type, d.line.id, d.line.version, d.reason) for d in timeline.selection(POLITICS).deliveries]
    assert got == [
        ("line", "en-a", 1, ""),
        ("retract", "en-a", 2, "filtered"),
        ("update", "en-b", 2, ""),
        ("update", "en-b", 3, ""),
        ("line", "en-c", 1, ""),
        ("update", "en-c", 2, ""),
    ]
    end = cursor_key(timeline.events[-1].cursor)
    assert [(line.id, line.text) for line in timeline.snapshot_lines(end, POLITICS, 500)] == [
        ("en-c", "C2"),
        ("en-b", "B3"),
    ]
    assert [line.id for line in timeline.snapshot_lines(end, POLITICS, 1)] == ["en-c"]


def test_model_filtered_snapshot_plus_selection_is_the_filtered_state() -> None:
    """For random actions, filters and snapshot points: the filtered snapshot at any cursor with the
    filter's selection applied after it equals the filtered live lines at the end."""
    rng = random.Random(8)
    topics = ("politics", "economy", "mena", "europe")
    for _ in range(30):
        actions: list[Action] = []
        live: list[str] = []
        for i in range(60):
            roll = rng.random()
            desk_id = f"{1000 + i}-0"
            line_topics = tuple(rng.sample(topics, rng.randint(0, 2)))
            urgency = rng.choice(("flash", "urgent", "routine"))
            if not live or roll < 0.4:
                live.append(f"en-{i}")
                post = Action(desk_id, "post", live[-1], "en", f"t{i}", line_topics, urgency, str(i))
                actions.append(post)
            elif roll < 0.85:
                actions.append(
                    Action(desk_id, "correct", rng.choice(live), "en", f"t{i}", line_topics, urgency)
                )
            else:
                actions.append(Action(desk_id, "retract", live.pop(rng.randrange(len(live))), "en"))
        events = [
            dataclasses.replace(e, cursor=f"{2000 + i}-0")
            for i, e in enumerate(expected_tickers(actions)["en"])
        ]
        timeline = Timeline("en", events)
        end = cursor_key(events[-1].cursor)
        for _ in range(5):
            flt = ReaderFilter(
                ("en",),
                frozenset(rng.sample(topics, rng.randint(0, 2))),
                rng.choice(("flash", "urgent", "routine")),
            )
            start = cursor_key(rng.choice(events).cursor)
            held = {line.id: line for line in timeline.snapshot_lines(start, flt, 10_000)}
            for delivery in timeline.selection(flt).between(start, end):
                apply_delivery(held, delivery.type, delivery.line)
            assert held == {line.id: line for line in timeline.snapshot_lines(end, flt, 10_000)}


# -- the checker on correct and damaged recordings ---------------------------------------------


def test_checker_passes_correct_recordings() -> None:
    """Recordings of a correct server (snapshots, replays on reconnect, SSE ids, filters moving
    lines in and out) pass with no violation, and every delivery is counted."""
    _, _, readers = _scenario()
    report = _check(readers)
    assert report.ok, report.summary()
    assert report.deliveries > 20 and report.snapshots >= 8 and report.reset_snapshots == 0


@pytest.mark.parametrize("transport", ["ws", "sse"])
@pytest.mark.parametrize("fault", ["GAP", "DUPLICATE", "REORDER"])
def test_checker_catches_an_injected_fault_as_exactly_that_kind(transport: str, fault: str) -> None:
    """B's two corrections reach an unfiltered reader as consecutive updates; dropping the first is
    a GAP, repeating it a DUPLICATE, swapping them a REORDER, and nothing else is reported."""
    _, tickers, _ = _scenario()
    record = _reader("victim", ReaderFilter(("en",)), transport, tickers, [])
    messages = record.connections[0].messages
    first, second = (
        i
        for i in _event_indices(record)
        if orjson.loads(messages[i][0]).get("change") == "correction"
        and orjson.loads(messages[i][0])["line"]["id"] == "en-b"
    )
    assert second == first + 1
    cursor = _cursor(record, first)
    if fault == "GAP":
        del messages[first]
    elif fault == "DUPLICATE":
        messages.insert(second, messages[first])
    else:
        # Swapped; an SSE server tracking the newest cursor would give both the later id.
        earlier, later = messages[first], messages[second]
        messages[first], messages[second] = later, (earlier[0], later[1])
    report = _check([record])
    assert report.kinds() == {fault}, report.summary()
    [violation] = report.violations
    assert (violation.reader, violation.edition, violation.cursor) == ("victim", "en", cursor)
    assert _check([_reader("victim", ReaderFilter(("en",)), transport, tickers, [])]).ok


def test_checker_catches_a_gap_across_a_reconnection() -> None:
    """A WebSocket reader resuming with a cursor past an event it never got: a GAP at that event."""
    _, tickers, _ = _scenario()
    record = _reader("resumer", ReaderFilter(("en",)), "ws", tickers, [2004])
    last = _event_indices(record, 0)[-1]
    lost = _cursor(record, last)
    del record.connections[0].messages[last]
    report = _check([record])
    assert report.kinds() == {"GAP"} and report.violations[0].cursor == lost, report.summary()


def test_checker_catches_an_sse_id_that_passes_an_undelivered_event() -> None:
    """An SSE id claiming an event the reader never got: a browser would resume past it (GAP)."""
    _, tickers, _ = _scenario()
    record = _reader("sse", ReaderFilter(("en",)), "sse", tickers, [])
    messages = record.connections[0].messages
    index = _event_indices(record)[2]
    lost = _cursor(record, index)
    messages[index] = (b'{"type":"heartbeat"}', messages[index][1])
    report = _check([record])
    assert report.kinds() == {"GAP"}, report.summary()
    assert report.violations[0].cursor == lost and "SSE id" in report.violations[0].detail


def test_checker_catches_sse_ids_without_the_resumed_editions() -> None:
    """The old SSE bug: after a resume, messages whose id lacks an edition the reader gave a cursor
    for (here `subscribed` without an id) are SSE_ID violations."""
    _, tickers, _ = _scenario()
    record = _reader("sse", EVERYTHING, "sse", tickers, [2004])
    resumed = record.connections[1]
    assert resumed.resume and resumed.messages[1][1] is not None
    resumed.messages[1] = (resumed.messages[1][0], None)
    report = _check([record])
    assert report.kinds() == {"SSE_ID"}, report.summary()


def test_checker_reports_the_other_kinds() -> None:
    """Snapshot content, reset snapshots, a lost tail, a delivery the filter excludes and a ticker
    that lost an acknowledged action are each reported under their own kind."""
    actions, tickers, _ = _scenario()

    def damaged(edit: Any, flt: ReaderFilter = EVERYTHING) -> set[str]:
        record = _reader("r", flt, "ws", tickers, [])
        edit(record.connections[0].messages)
        return _check([record]).kinds()

    def drop_snapshot_line(messages: list[tuple[bytes, str | None]]) -> None:
        snapshot = orjson.loads(messages[2][0])
        snapshot["lines"] = [
            {"id": "en-zz", "version": 1, "text": "x", "topics": [], "urgency": "flash", "published_at": ""}
        ]
        messages[2] = (orjson.dumps(snapshot), None)

    def make_reset(messages: list[tuple[bytes, str | None]]) -> None:
        snapshot = orjson.loads(messages[2][0])
        messages[2] = (orjson.dumps({**snapshot, "reset": True, "reason": "the ticker log is empty"}), None)

    def drop_tail(messages: list[tuple[bytes, str | None]]) -> None:
        del messages[-1]

    assert "SNAPSHOT" in damaged(drop_snapshot_line)
    assert damaged(make_reset) == {"RESET"}
    assert damaged(drop_tail) == {"INCOMPLETE", "FINAL_STATE"}
    politics = _reader("p", POLITICS, "ws", tickers, [])
    everything = _reader("e", ReaderFilter(("en",)), "ws", tickers, [])
    extra = next(
        raw
        for raw, _ in everything.connections[0].messages
        if orjson.loads(raw).get("line", {}).get("text") == "B1"
    )
    politics.connections[0].messages.insert(3, (extra, None))
    assert _check([politics]).kinds() == {"FILTER"}
    report = check(actions[:-1], tickers, [])
    assert report.kinds() == {"TICKER"}, report.summary()


def test_sse_parser_follows_the_event_stream_format() -> None:
    """CRLF, CR and LF line ends, comments, a space after the colon, events split across chunks,
    and ids that persist only when sent (as the HTML standard's EventSource parses them)."""
    parser = SseParser()
    stream = (
        b'retry: 2000\r\ndata: {"type":"hello"}\r\n\r\n'
        b': comment\nid: en:1-0\ndata: {"a":1}\n\n'
        b'data:{"b":2}\r\rid\n\n'
    )
    events = []
    for i in range(0, len(stream), 7):
        events += parser.feed(stream[i : i + 7])
    assert events == [(b'{"type":"hello"}', None), (b'{"a":1}', "en:1-0"), (b'{"b":2}', None), (b"", "")]


# -- the randomized run against real processes -----------------------------------------------


# 20 s of editing (RunConfig's default is 30 s), the three faults at 3, 8 and 12 s: each fault
# still has live traffic before, during and after it, and the last one (Redis down 2 s, readers
# refused and told to wait 2.5 to 5 s) ends with every reader back before the editors stop. What
# the shorter run gives up is part of the editing between faults: on one run each, 977 actions and
# 518 connections checked in 24 s, against 1,221 and 500 in 36 s with 30 s.
EDIT_S = 20.0
FAULTS = ((0.15, "node"), (0.4, "worker"), (0.6, "redis"))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_randomized_delivery_under_faults(tmp_path: Path) -> None:
    """3 nodes, 2 workers, 150 WebSocket and 60 SSE readers with random filters, 4 editors posting,
    correcting (lines move into and out of filters) and retracting, while a node, a worker and
    Redis are SIGKILLed and restarted: every reader got exactly its events, in order, and holds
    exactly the lines it should. FLASHWIRE_MODEL_SEED=<n> replays a seed's random choices."""
    seed = int(os.environ.get("FLASHWIRE_MODEL_SEED") or random.SystemRandom().randrange(1, 10**9))
    print(f"FLASHWIRE_MODEL_SEED={seed}")
    outcome = await run_fault_model(RunConfig(seed=seed, work_dir=tmp_path, edit_s=EDIT_S, faults=FAULTS))
    print(outcome.summary())
    assert outcome.ok and outcome.fault_kinds() == {"node", "worker", "redis"}, outcome.failure_text()
    assert outcome.report is not None and outcome.report.reset_snapshots == 0
