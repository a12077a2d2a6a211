"""One strict cursor rule on every way a reader gives a resume cursor (issue 10, finding 7), against a
real `flashwire serve` and worker: the SSE query and Last-Event-ID, the WebSocket query, and the
subscribe message in both its forms.

The rule (flashwire/core/cursors.py): `<ms>-<seq>` or `<ms>`, ASCII digits, each part at most
2^64 - 1, the whole value and nothing else (`fullmatch`, no `$`-before-newline leniency). Only
spaces around an `edition:cursor` pair are ignored: a newline, or any other white space such as
NEL (U+0085), that `str.strip()` used to trim from a pair is refused, with 400 (SSE) or 4400
(WebSocket) naming `since`.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import quote

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from flashwire.core.cursors import U64_MAX
from tests.conftest import Reader, Stack, open_reader, post_line


async def _a_cursor(stack: Stack, url: str) -> str:
    """The cursor of a real ticker entry of `en` (a line posted and applied)."""
    token = await stack.token("editor", ["en"])
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await post_line(client, token, "Storm warning")
    await stack.until_applied()
    redis = stack.redis()
    try:
        [(entry_id, _)] = await redis.xrevrange(stack.keys.ticker("en"), count=1)
    finally:
        await redis.aclose()
    return str(entry_id.decode())


async def _close_code(reader: Reader) -> int | None:
    """The close code the server sent, or None if it kept the connection open (it accepted the
    subscription) for a few seconds."""
    try:
        async with asyncio.timeout(3):
            return await reader.until_closed()
    except TimeoutError:
        return None


def _bad_since(cursor: str) -> list[str]:
    """`since` values (as they arrive, decoded) that break the rule, each around a real cursor."""
    return [
        f"{cursor}\n",  # the bare form: refused before this fix already
        f"en:{cursor}\n",  # the pair form: the pair was stripped, and the newline with it
        f"en:{cursor}\r\n",
        f"en:{cursor}\x85",  # NEL: str.strip() trims it too
        f"en:{cursor}\u2028",
        f"en:\t{cursor}",
        f"en:{cursor},ar:{cursor}\n",
        f"en:{U64_MAX + 1}-0",
        f"en:0-{U64_MAX + 1}",
    ]


def _sse_status(port: int, query: str, last_event_id: bytes | None = None) -> tuple[int, bytes]:
    """Status and body of an SSE answer (a 200: up to its first event with an `id:`), over a raw
    socket: a header value is sent as the bytes given, which no HTTP client library would send."""
    head = f"GET /sse?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    if last_event_id is not None:
        head += b"Last-Event-ID: " + last_event_id + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            status_line, _, rest = data.partition(b"\r\n")
            headers, separator, body = rest.partition(b"\r\n\r\n")
            if not separator:
                continue
            status = int(status_line.split(b" ")[1])
            if status != 200:
                length = next(
                    int(line.split(b":")[1])
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(body) >= length:
                    return status, body[:length]
            elif b"\nid: " in body and body.endswith(b"\n\n\r\n"):
                return status, body
    raise AssertionError(f"the answer ended early: {data!r}")


@pytest.mark.timeout(60)
async def test_a_cursor_breaking_the_rule_is_refused_over_sse_query_and_last_event_id(stack: Stack) -> None:
    """Each bad `since` is a 400 naming `since` on /sse, by query and by Last-Event-ID (as latin-1
    bytes, NEL included); a good cursor resumes, and its `id:` line is one line."""
    stack.worker()
    node = stack.service()
    cursor = await _a_cursor(stack, node.url)
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        for since in _bad_since(cursor):
            params = {"editions": "en" if since.startswith(cursor) else "en,ar", "since": since}
            async with client.stream("GET", "/sse", params=params) as response:
                assert response.status_code == 400, (since, response.status_code)
                body = orjson.loads(await response.aread())
            assert body["error"]["field"] == "since", (since, body)
    for header in (f"en:{cursor}\x85".encode("latin-1"), f"en:{cursor}\xa0".encode("latin-1")):
        status, answer = _sse_status(node.port, "editions=en", last_event_id=header)
        assert status == 400, (header, answer)
        assert b'"field":"since"' in answer
    status, answer = _sse_status(node.port, f"editions=en&since=en:{cursor}")
    assert status == 200, answer
    ids = [line for line in answer.split(b"\n") if line.startswith(b"id:")]
    assert all(line == f"id: en:{cursor}".encode() for line in ids), ids


@pytest.mark.timeout(60)
async def test_a_cursor_breaking_the_rule_is_refused_over_websocket_query_and_subscribe(
    stack: Stack, readers: list[Reader]
) -> None:
    """The same values on /ws: in the query, and in a subscribe message as a query-syntax string and
    as an {edition: cursor} object: hello, then close 4400 with a reason naming `since`."""
    node = stack.service()
    stack.worker()
    cursor = await _a_cursor(stack, node.url)
    for since in _bad_since(cursor):
        editions = "en" if since.startswith(cursor) else "en,ar"
        reader = await open_reader(node.ws_url, f"editions={editions}&since={quote(since, safe='')}")
        readers.append(reader)
        assert await _close_code(reader) == 4400, since
        assert reader.close_reason is not None and reader.close_reason.startswith("since: "), since
    messages: list[dict[str, object]] = []
    for since in _bad_since(cursor):
        messages.append({"type": "subscribe", "editions": ["en", "ar"], "since": since})
    for bad in (f"{cursor}\n", f"{cursor}\x85", f"{U64_MAX + 1}-0"):
        messages.append({"type": "subscribe", "editions": ["en"], "since": {"en": bad}})
    for message in messages:
        ws = await connect(node.ws_url, ping_interval=None, max_queue=None)
        reader = Reader(ws)
        readers.append(reader)
        assert (await reader.next())["type"] == "hello"
        await ws.send(orjson.dumps(message).decode())
        assert await _close_code(reader) == 4400, message
        assert reader.close_reason is not None and reader.close_reason.startswith("since: "), message
    # The rule still lets a good cursor through, by each way, spaces around a pair included.
    good = await open_reader(node.ws_url, f"editions=en,ar&since={quote(f' en:{cursor} ,ar:0-0', safe='')}")
    readers.append(good)
    subscribed = await good.next_of("subscribed")
    assert subscribed["resuming"] == ["ar", "en"]
