"""Fuzz runs against a real `flashwire serve` and worker: the API with schemathesis, the reader
endpoints with hypothesis.

Schemathesis reads the served OpenAPI document and, for every operation, sends requests generated
from its schemas (valid ones, then invalid ones), with an editor token. Every answer must be
documented: no 500, a documented status and content type, a body that validates against the
response schema, and authentication enforced where the document says it is (`ignored_auth`).
Bounded: a few examples per operation, the whole run well under a minute.

/sse is left out of that run: its answer is an endless stream, which a request-response fuzzer
cannot read to its end (tests/test_openapi.py checks its description). The reader endpoints have a
run of their own (hypothesis, bounded in examples and time): the query strings of /ws, /sse and the
feeds, with the headers they read (Last-Event-ID, If-None-Match, If-Modified-Since), and the
WebSocket subscribe message. No answer may be a 5xx or a 1011 close, the node's log must hold no
traceback, and its memory and open descriptors must come back within bounds afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from flashwire.core.cursors import U64_MAX
from tests.conftest import Stack
from tests.rawws import RawWebSocket
from tests.untraced import untraced

# Heavy on CPU and timing: these run one after another on one test process (`-n 2 --dist loadgroup`).
pytestmark = pytest.mark.xdist_group("heavy")

EXAMPLES_PER_OPERATION = 8
RUN_LIMIT_S = 100


@pytest.mark.slow
@pytest.mark.timeout(RUN_LIMIT_S + 30)
async def test_fuzzing_the_running_api_finds_no_server_error_and_no_undocumented_answer(
    stack: Stack, tmp_path: Path
) -> None:
    """schemathesis over every operation but /sse: all checks pass, with valid and invalid data."""
    stack.worker()
    node = stack.service()
    token = await stack.token(role="editor", editions=["*"], name="Fuzz")
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{node.url}/api/v1/openapi.json",
        "--checks=all",
        # Schema-valid is not acceptable: the one text rule (no control or invisible characters,
        # something visible) cannot be said in JSON Schema, so a valid-looking headline may get 422.
        "--exclude-checks=positive_data_acceptance",
        "--mode=all",
        f"--max-examples={EXAMPLES_PER_OPERATION}",
        "--phases=examples,coverage,fuzzing",
        "--seed=9",
        "--generation-database=none",
        "--request-timeout=5",
        "--exclude-path=/sse",
        "--no-color",
        f"--header=Authorization: Bearer {token}",
    ]
    # schemathesis runs no Flashwire code: no coverage tracer in it (tests/untraced.py).
    run = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        cwd=tmp_path,
        env=untraced(os.environ),
    )
    (tmp_path / "schemathesis.txt").write_text(run.stdout + run.stderr)
    report = f"full report: {tmp_path / 'schemathesis.txt'}\n" + run.stdout[-12_000:] + run.stderr[-4_000:]
    assert run.returncode == 0, report
    assert " passed" in run.stdout and "failed" not in run.stdout.rsplit("=", 1)[-1], report


# -- the reader endpoints: query strings and the subscribe message (hypothesis) ---------------------

READER_EXAMPLES = 200  # per target: four targets, a few seconds each on this machine
READER_RUN_LIMIT_S = 150
RSS_GROWTH_MAX_BYTES = 20 * 1024 * 1024
FD_SLACK = 8
QUERY_NAMES = ("editions", "edition", "topics", "min_urgency", "since")
# Pieces a reader (or an attacker) plausibly sends, valid and not: editions, topics, urgencies,
# cursors at and past the 64-bit bounds, with the characters that used to slip through.
TOKENS = (
    "en", "ar", "es", "fr", "", "EN", "en ", "politics", "mena", "weather", "flash", "urgent",
    "routine", "0", "0-0", "1-0", "1795625033442-0", f"{U64_MAX}-{U64_MAX}", f"{U64_MAX + 1}-0",
    "1-0\n", "1-0\r\n", "1-0\x85", "\u0661-0", "-1", "1-", "en:1-0", "ar:2-5", "es:0", "en:", ":1-0",
    "en:1-0\n", "en:1-0,ar:1-0", ",", "%", "%0A", "%ZZ", "\x00", "\ufeff", "\u202e",
)  # fmt: skip


def _quote(value: str | bytes) -> str:
    return quote(value, safe="")


def _query_strings() -> st.SearchStrategy[str]:
    """A query string as it goes on the request line: pairs of known and unknown names with values
    from TOKENS, joined tokens, any text, any bytes (invalid UTF-8 included), all percent-encoded;
    or raw ASCII with stray `%`, `&`, `=` and `;`."""
    value = st.one_of(
        st.sampled_from(TOKENS),
        st.lists(st.sampled_from(TOKENS), max_size=4).map(",".join),
        st.text(max_size=30),
        st.binary(max_size=30),
    )
    name = st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=8))
    pairs = st.lists(st.tuples(name, value), max_size=5).map(
        lambda items: "&".join(f"{_quote(k)}={_quote(v)}" for k, v in items)
    )
    raw = st.text(alphabet="%&=;+,:-0123456789abcdefAFenarsi", max_size=40)
    return st.one_of(pairs, raw)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=8,
    )


def _subscribe_messages() -> st.SearchStrategy[str | bytes]:
    """Subscribe messages with every field of the right type or not, plus text that is not JSON or
    not an object, and binary frames."""
    token = st.sampled_from(TOKENS)
    anything = _json_values()
    fields = {
        "editions": st.one_of(st.lists(token, max_size=4), anything),
        "topics": st.one_of(st.lists(token, max_size=4), anything),
        "min_urgency": st.one_of(token, anything),
        "since": st.one_of(
            token,
            st.lists(token, max_size=3).map(",".join),
            st.dictionaries(token, st.one_of(token, anything), max_size=3),
            anything,
        ),
    }
    message = st.fixed_dictionaries({"type": st.one_of(st.just("subscribe"), anything)}, optional=fields).map(
        json.dumps
    )
    return st.one_of(message, message, st.text(max_size=40), st.binary(max_size=40))


class NodeWatch:
    """A service node's resident memory and open descriptors, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def _raw_ws(port: int, query: str) -> tuple[int, list[bytes], int | None]:
    """Open /ws with `query` exactly as given (a raw socket: websockets' client would re-quote `%`):
    (HTTP status, the text frames read up to `subscribed` or the close, the close code). A query
    that names no subscription parameter (as Starlette reads it) is left after `hello`: the node
    would wait for a subscribe message, which the subscribe run covers."""
    subscribes = any(name in QUERY_NAMES for name, _ in parse_qsl(query, keep_blank_values=True))
    try:
        ws = RawWebSocket(port, query)
    except ConnectionError as refused:
        status_line = str(refused).split("\r\n", 1)[0]
        return int(status_line.split(" ")[1]) if status_line.startswith("HTTP/") else 0, [], None
    try:
        texts: list[bytes] = []
        while True:
            frame = ws.read_frame(timeout_s=5)
            if frame is None:
                return 101, texts, None
            opcode, payload = frame
            if opcode == 0x8:
                return 101, texts, int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            if opcode == 0x1:
                texts.append(payload)
                if b'"type":"subscribed"' in payload or not subscribes:
                    return 101, texts, None
    finally:
        ws.close()


@pytest.mark.slow
@pytest.mark.timeout(READER_RUN_LIMIT_S + 30)
def test_fuzzing_the_reader_endpoints_finds_no_server_error_and_no_growth(stack: Stack) -> None:
    """hypothesis against a real node: query strings of /ws, /sse (with Last-Event-ID) and the feeds
    (with their conditional headers), and the WebSocket subscribe message. Every answer is a 2xx,
    304 or 4xx (a WebSocket: `subscribed`, or a close with 4400 or 1009, never 1011); the node logs
    no traceback and no 5xx; its memory and open descriptors afterwards are back within bounds."""
    stack.worker()
    node = stack.service()
    watch = NodeWatch(node.pid)
    deadline = time.monotonic() + READER_RUN_LIMIT_S
    fuzz = settings(
        max_examples=READER_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    # Visible ASCII and inner spaces: a field value has no white space at its ends (RFC 9110
    # section 5.5), and the client (h11) refuses to send one that has.
    header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
        str.strip
    )
    client = httpx.Client(base_url=node.url, timeout=5, trust_env=False)
    # What each target answered (target, outcome): the run must have seen both sides of each.
    outcomes: Counter[tuple[str, str]] = Counter()

    def in_time() -> None:
        assert time.monotonic() < deadline, "the fuzz run is over its time budget"

    @fuzz
    @given(query=_query_strings(), last_event_id=st.none() | header_text)
    def sse(query: str, last_event_id: str | None) -> None:
        in_time()
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        with client.stream("GET", f"/sse?{query}", headers=headers) as response:
            assert response.status_code < 500, (query, last_event_id, response.status_code)
            outcomes["sse", "served" if response.status_code == 200 else "refused"] += 1
            if response.status_code == 200:
                first = next(response.iter_raw())
                assert first.startswith(b"retry:"), first
            elif response.headers.get("content-type") == "application/json":
                assert "field" in orjson.loads(response.read())["error"]

    @fuzz
    @given(
        edition=st.sampled_from(["en", "ar", "fr", "EN", "%65n", "en%0A"]) | st.text(max_size=6),
        form=st.sampled_from(["json", "rss", "atom", "xml", "JSON", ""]),
        query=_query_strings(),
        if_none_match=st.none() | header_text,
        if_modified_since=st.none() | header_text,
    )
    def feeds(
        edition: str, form: str, query: str, if_none_match: str | None, if_modified_since: str | None
    ) -> None:
        in_time()
        headers = {}
        if if_none_match is not None:
            headers["If-None-Match"] = if_none_match
        if if_modified_since is not None:
            headers["If-Modified-Since"] = if_modified_since
        response = client.get(f"/feeds/{_quote(edition)}.{form}?{query}", headers=headers)
        assert response.status_code < 500, (edition, form, query, headers, response.status_code)
        outcomes["feeds", "served" if response.status_code in (200, 304) else "refused"] += 1

    @fuzz
    @given(query=_query_strings())
    def ws_query(query: str) -> None:
        in_time()
        status, texts, code = _raw_ws(node.port, query)
        assert status in (101, 400, 403, 404, 414, 431), (query, status)
        if status == 101 and code is not None:
            assert code in (4400, 1009), (query, code, texts)
        outcomes["ws", "served" if status == 101 and code is None else "refused"] += 1

    @fuzz
    @given(message=_subscribe_messages())
    def subscribe(message: str | bytes) -> None:
        in_time()
        with connect(node.ws_url, proxy=None, compression=None, open_timeout=5, close_timeout=1) as ws:
            assert orjson.loads(ws.recv(timeout=5))["type"] == "hello"
            ws.send(message)
            try:
                while orjson.loads(ws.recv(timeout=5))["type"] != "subscribed":
                    pass
                outcomes["subscribe", "served"] += 1
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code in (4400, 1009), (message, closed)
                outcomes["subscribe", "refused"] += 1

    try:
        for _ in range(20):  # warm-up: code paths loaded, allocator pools grown
            assert _raw_ws(node.port, "editions=en")[0] == 101
            client.get("/feeds/en.json").raise_for_status()
        rss_before, fds_before = watch.rss_bytes(), watch.fds()
        for run in (sse, feeds, ws_query, subscribe):
            run()
    finally:
        client.close()
    for target in ("sse", "feeds", "ws", "subscribe"):
        assert outcomes[target, "served"] and outcomes[target, "refused"], outcomes
    # Connections the node has not finished closing yet are given a moment.
    fds_after = watch.fds()
    settle = time.monotonic() + 5
    while fds_after > fds_before + FD_SLACK and time.monotonic() < settle:
        time.sleep(0.1)
        fds_after = watch.fds()
    growth = watch.rss_bytes() - rss_before
    assert fds_after <= fds_before + FD_SLACK, (fds_before, fds_after)
    assert growth < RSS_GROWTH_MAX_BYTES, f"node RSS grew {growth / 1e6:.1f} MB"
    log = node.log()
    assert "Traceback" not in log, log[-6000:]
    assert not [line for line in log.splitlines() if '" 5' in line or " ERROR " in line], log[-6000:]
