"""Metrics and connection logs (issue 9): /metrics and the worker's endpoint as Prometheus parses
them, one log line per reader connection, and JSON logs, all against real processes."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from flashwire.core.protocol import TOO_MANY_PINGS
from flashwire.dev.ports import free_port
from tests.conftest import (
    ManagedProcess,
    Reader,
    ServiceNode,
    Stack,
    auth,
    eventually,
    open_reader,
    post_line,
)
from tests.rawws import RawWebSocket
from tests.test_http_limits import exchange, read_answer, served
from tests.test_ping_flood import masked_frame

# Every series /metrics showed before prometheus_client, with its type: kept, same names.
EXISTING = {
    "flashwire_connections": "gauge",
    "flashwire_subscriptions": "gauge",
    "flashwire_outbox_frames": "gauge",
    "flashwire_events_read": "counter",
    "flashwire_deliveries": "counter",
    "flashwire_slow_closed": "counter",
    "flashwire_replay_reads": "counter",
    "flashwire_snapshot_reads": "counter",
    "flashwire_replay_from_ring": "counter",
    "flashwire_redis_errors": "counter",
    "flashwire_history_resets": "counter",
    "flashwire_redis_up": "gauge",
    "flashwire_workers_alive": "gauge",
    "flashwire_desk_lag_seconds": "gauge",
}
HISTOGRAMS = ("flashwire_post_to_ticker_seconds", "flashwire_ticker_to_socket_seconds")
# Refusals at the node's edge (issue 10), all counters.
EDGE_COUNTERS = (
    "flashwire_sockets_refused",
    "flashwire_heads_refused",
    "flashwire_readers_refused_per_client",
    "flashwire_ping_limit_closed",
)


def _families(text: str) -> dict[str, Metric]:
    """The exposition parsed by prometheus_client's own parser, with HELP and TYPE on every family
    (the parser makes a family without TYPE 'unknown', and one without HELP has no documentation)."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, family in families.items():
        assert family.type != "unknown", f"{name} has no TYPE line"
        assert family.documentation, f"{name} has no HELP line"
    return families


def _value(families: dict[str, Metric], name: str, suffix: str = "", **labels: str) -> float:
    """The one sample `name + suffix` with exactly these labels."""
    [value] = [
        sample.value
        for sample in families[name].samples
        if sample.name == name + suffix and sample.labels == labels
    ]
    return float(value)


async def _scrape(url: str) -> dict[str, Metric]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    return _families(response.text)


async def _log_until(process: ManagedProcess, predicate: Any, timeout_s: float = 10.0) -> str:
    """The process's log once `predicate(log)` holds (fail with the log after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = process.log()
        if predicate(log):
            return log
        assert time.monotonic() < deadline, log
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("direct_writes", ["1", "0"])
async def test_metrics_parse_with_help_and_type_and_time_a_post_once(
    stack: Stack, readers: list[Reader], direct_writes: str
) -> None:
    """/metrics parses with prometheus_client's parser, every family has HELP and TYPE, the old
    series keep their names and types, the direct-writers gauge counts the readers on the fast
    path (none with FLASHWIRE_DIRECT_WRITES=0), and both latency histograms have exactly one
    observation after one post reached two readers: once per event, whether the hub wrote the
    frames directly or each reader's sender wrote its own."""
    stack.worker()
    node = stack.service(FLASHWIRE_DIRECT_WRITES=direct_writes)
    editor = await stack.token()
    for _ in range(2):
        readers.append(await open_reader(node.ws_url, "editions=en"))
        await readers[-1].next_of("snapshot")
    families = await _scrape(f"{node.url}/metrics")
    for name, kind in EXISTING.items():
        assert families[name].type == kind, name
    assert "flashwire_direct_writers" in families
    for name in EDGE_COUNTERS:
        assert families[name].type == "counter", name
    for name in HISTOGRAMS:
        assert families[name].type == "histogram"
        assert _value(families, name, "_count") == 0
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        await post_line(client, editor, "Parliament dissolved; elections in 60 days")
    for reader in readers:
        [event] = await reader.events(1)
        assert event["type"] == "line"
    # The hub times the event as it writes it, and takes readers over once they caught up: the
    # scrape may race both.
    direct = 2 if direct_writes == "1" else 0
    deadline = time.monotonic() + 5
    while True:
        families = await _scrape(f"{node.url}/metrics")
        settled = all(_value(families, name, "_count") == 1 for name in HISTOGRAMS)
        if settled and _value(families, "flashwire_direct_writers") == direct:
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert _value(families, "flashwire_direct_writers") == direct
    for name in HISTOGRAMS:
        assert _value(families, name, "_count") == 1, name
        assert _value(families, name, "_bucket", le="+Inf") == 1, name
        assert 0 <= _value(families, name, "_sum") < 10, name
    assert _value(families, "flashwire_connections") == 2
    assert _value(families, "flashwire_events_read", "_total") == 1
    assert _value(families, "flashwire_workers_alive") == 1


async def test_the_worker_serves_its_own_metrics_and_stops_with_them(stack: Stack) -> None:
    """A worker with FLASHWIRE_WORKER_METRICS_PORT serves Prometheus metrics whose counters follow
    what was posted (actions by type, commits, arq's sweep jobs) and whose Redis state follows an
    outage; SIGTERM stops it cleanly and closes the port."""
    port = free_port()
    worker = stack.worker(FLASHWIRE_WORKER_METRICS_PORT=str(port))
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    url = f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        first = await post_line(client, chief, "Central bank raises rates by half a point")
        await post_line(client, chief, "Storm warning for the east coast")
        response = await client.post(
            f"/api/v1/lines/{first['id']}/retraction", json={"reason": "wrong figure"}, headers=auth(chief)
        )
        assert response.status_code == 201, response.text
    deadline = time.monotonic() + 10
    while True:
        families = await _scrape(url)
        settled = families["flashwire_worker_desk_actions"].samples
        # arq's once-a-second sweep may not have finished its first run on a loaded machine.
        swept = (
            _value(families, "flashwire_worker_arq_jobs", "_total", queue="scheduled", outcome="complete")
            >= 1
        )
        # The lag gauge is set by the heartbeat, once a second: it may still hold the last beat's
        # figure, taken before the consumer applied the last entry.
        caught_up = _value(families, "flashwire_worker_desk_lag_seconds") == 0
        if (
            sum(sample.value for sample in settled) >= 3 and swept and caught_up
        ) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert _value(families, "flashwire_worker_desk_actions", "_total", action="post") == 2
    assert _value(families, "flashwire_worker_desk_actions", "_total", action="retract") == 1
    assert _value(families, "flashwire_worker_desk_entries_applied", "_total") == 3
    assert _value(families, "flashwire_worker_desk_lag_seconds") == 0
    assert (
        _value(families, "flashwire_worker_arq_jobs", "_total", queue="scheduled", outcome="complete") >= 1
    ), "the sweep runs"
    assert _value(families, "flashwire_worker_redis_up") == 1
    assert _value(families, "flashwire_worker_errors", "_total", kind="redis_unavailable") == 0

    stack.redis_server.kill()
    deadline = time.monotonic() + 10
    while True:
        families = await _scrape(url)
        if _value(families, "flashwire_worker_redis_up") == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert _value(families, "flashwire_worker_redis_up") == 0
    assert _value(families, "flashwire_worker_redis_outages", "_total") == 1
    assert _value(families, "flashwire_worker_errors", "_total", kind="redis_unavailable") >= 1
    await asyncio.to_thread(stack.redis_server.start)
    deadline = time.monotonic() + 15
    while _value(await _scrape(url), "flashwire_worker_redis_up") != 1:
        assert time.monotonic() < deadline, worker.log()
        await asyncio.sleep(0.2)

    worker.terminate()
    assert worker.process is not None and worker.process.returncode == 0, worker.log()
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            await client.get(url)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the worker's metrics port is still served after it stopped")


# A topic that reads like the end of a connection line: unquoted, the line of this refused request
# ("... topics=x lasted 0.1s: closed by client, HTTP 200 lasted 0.002s: closed by server, HTTP 400")
# would tell a reader of the log that it was served.
SPOOFING_TOPICS = "x lasted 0.1s: closed by client, HTTP 200"
# One connection line of the text format: protocol, address, the quoted filter values (a quoted value
# holds no unescaped quote), duration, and how it ended.
CONNECTION_LINE = re.compile(
    r" reader connection (?P<protocol>ws|sse) (?P<client>\S+)"
    r'(?P<filter>(?: \w+="(?:[^"\\]|\\.)*")*) lasted (?P<duration>\d+(?:\.\d+)?)s: (?P<ending>.*)$'
)
FILTER_VALUE = re.compile(r' (\w+)="((?:[^"\\]|\\.)*)"')


def _connection_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "reader connection " in line]


def _parsed(line: str) -> tuple[str, str, dict[str, str], str]:
    """(protocol, client, filter values, ending) of a connection line; fails if it is not one."""
    match = CONNECTION_LINE.search(line)
    assert match is not None, line
    values = dict(FILTER_VALUE.findall(match["filter"]))
    return match["protocol"], match["client"], values, match["ending"]


async def test_each_reader_connection_is_logged_once_when_it_ends(stack: Stack) -> None:
    """A WebSocket reader, a refused one (4400), an SSE reader and a refused SSE request (400) each
    give exactly one line, written when they end, with address, protocol, filter, duration and how
    it ended; client-chosen values are quoted, so a topic that reads like the end of a line does not
    change how the line ends; uvicorn's handshake, 'connection open/closed' and /sse access lines are
    gone, other requests keep their access line."""
    node = stack.service()
    reader = await open_reader(node.ws_url, "editions=en&topics=politics&min_urgency=urgent")
    await reader.next_of("snapshot")
    client_port = reader.ws.local_address[1]
    await asyncio.sleep(0.2)
    assert _connection_lines(node.log()) == [], "nothing is logged while the reader is connected"
    await reader.ws.close()
    refused = await open_reader(node.ws_url, "editions=xx")
    assert await refused.until_closed() == 4400
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        async with client.stream("GET", "/sse?editions=ar") as response:
            async for line in response.aiter_lines():
                if '"snapshot"' in line:
                    break
        spoofing = await client.get("/sse", params={"editions": "en", "topics": SPOOFING_TOPICS})
        assert spoofing.status_code == 400, spoofing.text
        assert (await client.get("/healthz")).status_code == 200
    log = await _log_until(node, lambda text: len(_connection_lines(text)) >= 4)
    await asyncio.sleep(0.5)  # anything logged late would show now
    log = node.log()
    lines = [_parsed(line) for line in _connection_lines(log)]
    assert len(lines) == 4, _connection_lines(log)
    [ws_line] = [line for line in lines if line[1] == f"127.0.0.1:{client_port}"]
    assert ws_line[0] == "ws"
    assert ws_line[2] == {"editions": "en", "topics": "politics", "min_urgency": "urgent"}
    assert ws_line[3] == 'closed by client, 1000 ""'
    [refused_line] = [line for line in lines if line[2].get("editions") == "xx"]
    assert refused_line[0] == "ws"
    assert refused_line[3] == "closed by server, 4400 \"editions: unknown edition 'xx'\""
    [sse_line] = [line for line in lines if line[2].get("editions") == "ar"]
    assert sse_line[0] == "sse" and sse_line[3] == "closed by client, HTTP 200", sse_line
    [spoofing_line] = [line for line in lines if "topics" in line[2] and line[0] == "sse"]
    assert spoofing_line[2] == {"editions": "en", "topics": SPOOFING_TOPICS}
    assert spoofing_line[3] == "closed by server, HTTP 400"
    for noise in ("connection open", "connection closed", '"WebSocket /ws', "GET /sse"):
        assert noise not in log, (noise, log)
    assert '"GET /healthz HTTP/1.1" 200' in log, "other requests keep their access line"


async def test_readers_refused_at_the_connection_limit_are_logged_once(stack: Stack) -> None:
    """At the connection limit a WebSocket reader is refused with 1013 before `subscribed` and an SSE
    reader with 503; each gets exactly one line saying so, and the reader that was let in its own
    when it leaves."""
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS="1")
    holder = await open_reader(node.ws_url, "editions=en")
    await holder.next_of("snapshot")
    refused = Reader(await connect(node.ws_url + "?editions=ar"))  # closed before its hello
    assert await refused.until_closed() == 1013
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        assert (await client.get("/sse?editions=es")).status_code == 503
    await holder.ws.close()
    log = await _log_until(node, lambda text: len(_connection_lines(text)) >= 3)
    await asyncio.sleep(0.5)  # anything logged late would show now
    lines = {parsed[2].get("editions"): parsed for parsed in map(_parsed, _connection_lines(node.log()))}
    assert len(_connection_lines(node.log())) == 3, log
    assert lines["en"][3] == 'closed by client, 1000 ""'
    assert lines["ar"][0] == "ws"
    assert lines["ar"][3] == 'closed by server, 1013 "connection limit reached; retry later"'
    assert lines["es"][0] == "sse" and lines["es"][3] == "closed by server, HTTP 503"


async def test_json_logs_are_one_object_a_line_with_the_connection_fields(stack: Stack) -> None:
    """With FLASHWIRE_LOG_FORMAT=json every line the service and the worker write is a JSON object
    (time, level, logger, message), uvicorn's included, and the reader connection's fields are keys."""
    worker = stack.worker(FLASHWIRE_LOG_FORMAT="json")
    node: ServiceNode = stack.service(FLASHWIRE_LOG_FORMAT="json")
    reader = await open_reader(node.ws_url, "editions=es")
    await reader.next_of("snapshot")
    client_port = reader.ws.local_address[1]
    await reader.ws.close()
    await _log_until(node, lambda text: "reader connection" in text)
    await _log_until(worker, lambda text: "desk consumer" in text)
    worker.terminate()
    records: dict[str, list[dict[str, Any]]] = {}
    for process in (node, worker):
        lines = [line for line in process.log().splitlines() if line.strip()]
        assert lines
        records[process.log_path.name] = [orjson.loads(line) for line in lines]
        for record in records[process.log_path.name]:
            assert {"time", "level", "logger", "message"} <= record.keys(), record
            assert "color_message" not in record, "uvicorn's coloured copy of the message is left out"
    service_records = records[node.log_path.name]
    assert any(record["logger"].startswith("uvicorn") for record in service_records)
    [connection] = [record for record in service_records if record.get("protocol") == "ws"]
    assert connection["level"] == "INFO"
    assert connection["client"] == f"127.0.0.1:{client_port}"
    assert connection["editions"] == "es"
    assert connection["closed_by"] == "client" and connection["close_code"] == 1000
    assert isinstance(connection["duration_s"], float)


async def test_refusals_at_the_edge_are_counted(stack: Stack, readers: list[Reader]) -> None:
    """Each refusal at the edge counts once, in a counter with HELP and TYPE: a WebSocket reader
    (1013) and an SSE reader (429) over FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT, by protocol; request
    heads answered 414, 431, 400 and 408, by status; a WebSocket closed 1008 for too many pings; a
    socket closed at once over FLASHWIRE_MAX_SOCKETS. All start at 0."""
    node = stack.service(
        FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT="1",
        FLASHWIRE_MAX_CONNECTIONS="3",
        FLASHWIRE_MAX_SOCKETS="3",
        FLASHWIRE_HEADER_TIMEOUT_S="1",
    )
    families = await _scrape(f"{node.url}/metrics")
    assert _value(families, "flashwire_sockets_refused", "_total") == 0
    for status in ("400", "408", "414", "431"):
        assert _value(families, "flashwire_heads_refused", "_total", status=status) == 0
    for protocol in ("ws", "sse"):
        assert _value(families, "flashwire_readers_refused_per_client", "_total", protocol=protocol) == 0
    assert _value(families, "flashwire_ping_limit_closed", "_total") == 0

    holder = await open_reader(node.ws_url, "editions=en")
    readers.append(holder)
    await holder.next_of("snapshot")
    assert await Reader(await connect(node.ws_url + "?editions=ar")).until_closed() == 1013
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        assert (await client.get("/sse?editions=es")).status_code == 429
    await holder.ws.close()

    heads = [
        b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: node\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost node\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: node\r\n",  # never finished: 408 after 1 s
    ]
    answers = [await asyncio.to_thread(exchange, node.port, head) for head in heads]
    assert [answer.status for answer in answers] == [414, 431, 400, 408]

    async def no_reader_left() -> bool:
        return _value(await _scrape(f"{node.url}/metrics"), "flashwire_connections") == 0

    await eventually(no_reader_left)
    flooder = RawWebSocket(node.port, "editions=en")
    try:
        flooder.sock.sendall(masked_frame(0x9, b"p") * 11)
        frames = []
        while (frame := await asyncio.to_thread(flooder.read_frame, 5.0)) is not None:
            frames.append(frame)
    finally:
        flooder.close()
    assert (0x8, b"\x03\xf0" + TOO_MANY_PINGS.encode()) in frames  # 1008

    held = [await served(node) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", node.port)) as extra:
            answer = await asyncio.to_thread(read_answer, extra, 2.0)
            assert answer.closed and answer.status == 0
    finally:
        for sock in held:
            sock.close()

    async def scraped() -> dict[str, Metric] | None:
        try:
            return await _scrape(f"{node.url}/metrics")
        except (httpx.HTTPError, AssertionError):
            return None  # the held sockets may still count for a moment

    families = await eventually(scraped)
    assert _value(families, "flashwire_sockets_refused", "_total") == 1
    for status in ("400", "408", "414", "431"):
        assert _value(families, "flashwire_heads_refused", "_total", status=status) == 1, status
    for protocol in ("ws", "sse"):
        assert _value(families, "flashwire_readers_refused_per_client", "_total", protocol=protocol) == 1
    assert _value(families, "flashwire_ping_limit_closed", "_total") == 1


async def test_a_connection_the_node_ends_itself_is_logged_as_ended_by_the_server(stack: Stack) -> None:
    """A reader that never answers the node's keepalive pings is closed by the node with 1011
    "keepalive ping timeout", and its line says the server closed it (uvicorn tells the application
    only that the connection went, 1005, which read as "closed by client, 1005"); a reader that
    vanishes without a close frame is logged as dropped, 1006 (RFC 6455 section 7.1.5)."""
    node = stack.service(FLASHWIRE_HEARTBEAT_S="1")
    silent = RawWebSocket(node.port, "editions=en")  # reads nothing, answers no ping
    vanishing = RawWebSocket(node.port, "editions=ar")
    try:
        await asyncio.sleep(0.3)
        vanishing.close()
        log = await _log_until(node, lambda text: len(_connection_lines(text)) >= 2)
    finally:
        silent.close()
    lines = {parsed[2]["editions"]: parsed for parsed in map(_parsed, _connection_lines(log))}
    assert lines["en"][3] == 'closed by server, 1011 "keepalive ping timeout"', lines["en"]
    assert lines["ar"][3] == 'dropped, 1006 ""', lines["ar"]
