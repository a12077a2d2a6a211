"""The three first-party clients follow one set of client rules (docs/protocol.md, sections 8 to 11).

`TickerClient` (flashwire/client.py), `LiveTicker` (web/reader.js) and the `<flash-ticker>`
widget (web/ticker.js) are each driven against real servers, and each rule is checked where
the client's behaviour shows, at the server side:

- the backoff's schedule: a connection that only greets (`hello`, `subscribed`) does not reset
  the retry counter, a connection that delivers a `snapshot` does, and a close with 1013
  raises every wait to at least 2.5 s. These run against a small scripted WebSocket server
  (a real server on a real socket, which also serves the two browser clients' pages), since
  no Flashwire node can be asked to greet and then fail on purpose;
- stop on 4400, 4403, 4408 and 1009 (scripted), on a real node's 4400, and on a real node's
  414 to an upgrade whose URL is too long;
- the longer wait after a real node's per-address refusals (WebSocket 1013, SSE 429 with
  Retry-After), and after a handshake answered 429 with a Retry-After (scripted);
- the dead-connection timer: nothing for 2.5 x heartbeat_s, through a relay that freezes the
  connection, against a real node and worker; the line posted meanwhile still arrives;
- `flashwire listen` says on stderr when the connection is lost and when it is back.

The relay (`CountingProxy`) records every HTTP request line it forwards, so attempts are
counted where they happen; tests/test_reconnect_storm.py uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from flashwire.client import HandshakeRefused, Retry, SubscriptionRefused, TickerClient
from tests.conftest import ROOT, Reader, Stack, close_promptly, open_reader, post_line
from tests.partner import PartnerSite

# One chromium for the module's browser tests (the `chromium` fixture, tests/conftest.py), so every test
# here runs on the module's event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WEB = ROOT / "web"
# Long enough that timing slack on a busy machine stays well apart from a wrong multiplier
# (2 or 3 periods), short enough for a test.
HEARTBEAT_S = 2.0
HELLO = {"type": "hello", "protocol": 1, "node": "scripted", "heartbeat_s": 15.0, "editions": ["en"]}
SUBSCRIBED = {
    "type": "subscribed",
    "editions": ["en"],
    "topics": [],
    "min_urgency": "routine",
    "resuming": [],
}
SNAPSHOT = {"type": "snapshot", "edition": "en", "cursor": "0-0", "reset": False, "lines": []}
# How long a client that has stopped on a refusal is watched for another attempt: a client that took
# the refusal for a drop would retry after its first backoff step (0.125 to 0.25 s), four times sooner.
NO_RETRY_S = 1.0

# Each WebSocket a page constructs, with the time (page clock, ms) it was made and of its last message.
WEBSOCKET_LOG = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const entry = { made: Date.now(), last: null };
      window.__sockets.push(entry);
      this.addEventListener("message", () => { entry.last = Date.now(); });
    }
  };
})();
"""


@pytest_asyncio.fixture(loop_scope="module")
async def readers() -> AsyncIterator[list[Reader]]:
    """conftest's `readers`, on the module's event loop: a reader's connection belongs to the loop it
    was opened on, so it is closed there."""
    opened: list[Reader] = []
    yield opened
    await close_promptly(opened)


# -- a relay that counts requests and can freeze its connections ----------------------------------


class CountingProxy:
    """A TCP relay in front of a node: records each HTTP request line, and can freeze connections.

    Freezing stops forwarding in both directions on every connection open at that moment,
    without closing anything: to both ends the connection looks alive and silent, the way a
    half-open connection does after a laptop sleeps or a network changes. Connections made
    later are relayed normally.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[tuple[float, str]] = []  # (time.monotonic(), "GET /ws?... HTTP/1.1")
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def times(self, path: str) -> list[float]:
        """When each GET of `path` (e.g. `/ws`, `/sse`) arrived, any query."""
        pattern = re.compile(rf"GET {re.escape(path)}(\?| )")
        return [at for at, line in self.requests if pattern.match(line)]

    def freeze(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    async def close(self) -> None:
        self.freeze()
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)
        self._tasks.append(asyncio.create_task(self._pump(reader, up_writer, scan=True)))
        self._tasks.append(asyncio.create_task(self._pump(up_reader, writer, scan=False)))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, scan: bool) -> None:
        buffer = b""
        try:
            while chunk := await reader.read(65536):
                if scan:
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        head, _, buffer = buffer.partition(b"\r\n\r\n")
                        self.requests.append((time.monotonic(), head.split(b"\r\n", 1)[0].decode("latin-1")))
                        if b"upgrade: websocket" in head.lower():
                            scan = False  # what follows is WebSocket frames
                            break
                writer.write(chunk)
                await writer.drain()
        except OSError:
            writer.transport.abort()
        else:
            writer.close()


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[CountingProxy]:
    """A `CountingProxy` in front of `port`, closed afterwards."""
    proxy = await CountingProxy(port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


# -- a scripted WebSocket server -----------------------------------------------------------------


def _live_page() -> bytes:
    return (
        b'<!doctype html><meta charset="utf-8"><title>live</title><p id="status">connecting</p>'
        b'<ol id="lines"></ol><script type="module">import { LiveTicker } from "/web/reader.js";'
        b'new LiveTicker(document.getElementById("lines"), { editions: ["en"],'
        b' status: document.getElementById("status") }).start();</script>'
    )


def _widget_page(attributes: str = "") -> bytes:
    return (
        f'<!doctype html><meta charset="utf-8"><title>partner</title>'
        f'<script src="/web/ticker.js" defer></script><flash-ticker edition="en" {attributes}></flash-ticker>'
    ).encode()


class ScriptedServer:
    """Answers every /ws connection with the same messages and close, and serves the client pages.

    `/live.html` runs `LiveTicker` and `/partner.html` the widget (with the client library it
    loads), from the files under web/, so each browser client talks to this server as to a node of
    its own origin.
    """

    def __init__(self, messages: list[dict[str, Any]], close_code: int, close_reason: str = "") -> None:
        self.messages = [orjson.dumps(message).decode() for message in messages]
        self.close_code = close_code
        self.close_reason = close_reason
        self.attempts: list[float] = []
        self._server: Server | None = None

    async def start(self) -> ScriptedServer:
        self._server = await serve(
            self._session, "127.0.0.1", 0, process_request=self._page, compression=None
        )
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, ws: ServerConnection) -> None:
        self.attempts.append(time.monotonic())
        for message in self.messages:
            await ws.send(message)
        await ws.close(self.close_code, self.close_reason)

    def _page(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/ws":
            return None
        pages = {
            "/live.html": (_live_page(), "text/html; charset=utf-8"),
            "/partner.html": (_widget_page(), "text/html; charset=utf-8"),
            "/web/reader.js": ((WEB / "reader.js").read_bytes(), "text/javascript"),
            "/web/ticker.js": ((WEB / "ticker.js").read_bytes(), "text/javascript"),
            # The widget's connection is the client library's, which it loads from beside itself.
            "/web/client/flashwire.js": ((WEB / "client" / "flashwire.js").read_bytes(), "text/javascript"),
        }
        body, kind = pages.get(path, (b"not found", "text/plain"))
        headers = Headers(
            [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        )
        return Response(200 if path in pages else 404, "OK" if path in pages else "Not Found", headers, body)


@contextlib.asynccontextmanager
async def scripted(
    messages: list[dict[str, Any]], close_code: int, close_reason: str = ""
) -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer(messages, close_code, close_reason).start()
    try:
        yield server
    finally:
        await server.close()


# -- running the clients -------------------------------------------------------------------------


class Consumer:
    """A `TickerClient` consuming in the background; records what it yields, with the time."""

    def __init__(self, client: TickerClient) -> None:
        self.client = client
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with contextlib.aclosing(self.client.events()) as events:
            async for event in events:
                self.received.append((time.monotonic(), event))

    async def wait_for(self, kind: str, text: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _, event in self.received:
                if event["type"] == kind and (text is None or event.get("line", {}).get("text") == text):
                    return event
            assert not self.task.done(), self.task
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} {text or ''} within {timeout_s} s: {self.received}")

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def open_page(chromium: Browser, url: str, init_script: str = "") -> Page:
    page = await chromium.new_page()
    if init_script:
        await page.add_init_script(init_script)
    await page.goto(url)
    return page


async def close_pages(*pages: Page) -> None:
    """Close pages (and their browser contexts) before the scripted servers they used stop: a server
    waits for each open connection, and a connection the browser opened ahead and never used would
    hold it for websockets' `open_timeout` (10 s)."""
    for page in pages:
        await page.close()


def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def within(times: list[float], window_s: float) -> list[float]:
    return [at for at in times if times and at - times[0] <= window_s]


# -- the backoff schedule ------------------------------------------------------------------------


async def _attempts_of_each_client(
    chromium: Browser, messages: list[dict[str, Any]], close_code: int, run_s: float
) -> dict[str, list[float]]:
    """Run the three clients, each against its own scripted server, and return their attempt times."""
    async with (
        scripted(messages, close_code, "scripted") as for_python,
        scripted(messages, close_code, "scripted") as for_live,
        scripted(messages, close_code, "scripted") as for_widget,
    ):
        live = await open_page(chromium, f"{for_live.url}/live.html")
        widget = await open_page(chromium, f"{for_widget.url}/partner.html")
        # Started last, so that no page load competes with its first seconds.
        consumer = Consumer(TickerClient(f"ws://127.0.0.1:{for_python.port}/ws", editions=["en"]))
        await asyncio.sleep(run_s)
        await consumer.stop()
        # The widget never took a 1013 or a refused greeting for a blocked WebSocket.
        assert await widget.locator("flash-ticker").get_attribute("data-transport") == "ws"
        await live.close()
        await widget.close()
        return {
            "TickerClient": for_python.attempts,
            "LiveTicker": for_live.attempts,
            "widget": for_widget.attempts,
        }


async def test_a_greeting_alone_never_resets_the_backoff(chromium: Browser) -> None:
    """A node that sends hello and subscribed and then closes (1011) is retried with a growing
    backoff by all three clients (0.25 s doubling), not several times a second."""
    window_s = 6.0
    attempts = await _attempts_of_each_client(chromium, [HELLO, SUBSCRIBED], 1011, window_s + 0.5)
    for name, times in attempts.items():
        times = within(times, window_s)
        # Waits are within [d/2, d], d = 0.25, 0.5, 1, 2, 4 s: at most 6 attempts in 6 s.
        assert 4 <= len(times) <= 6, (name, _gaps(times))
        gaps = _gaps(times)
        assert gaps[2] >= 0.45, (name, gaps)  # the 3rd retry waited at least d/2 = 0.5 s


async def test_a_delivered_snapshot_resets_the_backoff(chromium: Browser) -> None:
    """A connection that delivers its snapshot resets the retry counter: the next drop is retried
    within the first step (0.125-0.25 s) by all three clients."""
    window_s = 4.0
    attempts = await _attempts_of_each_client(chromium, [HELLO, SUBSCRIBED, SNAPSHOT], 1011, window_s + 0.5)
    for name, times in attempts.items():
        times = within(times, window_s)
        # Without the reset: at most 6 attempts in 4 s, and waits of 1 to 2 s, then 2 to 4 s. With
        # it, each wait is one first step plus a connection; a loaded machine (a browser beside the
        # suite) stretched one to 1.13 s, so the bound on a single wait is 2 s; the count decides.
        assert len(times) >= 10, (name, _gaps(times))
        assert max(_gaps(times)) < 2.0, (name, _gaps(times))


async def test_after_1013_every_wait_is_at_least_two_and_a_half_seconds(chromium: Browser) -> None:
    """A node that greets and closes with 1013 (its store is down) is retried no sooner than
    2.5 s each time by all three clients, and the widget stays on WebSocket."""
    window_s = 6.0
    attempts = await _attempts_of_each_client(chromium, [HELLO], 1013, window_s + 0.5)
    for name, times in attempts.items():
        times = within(times, window_s)
        assert 2 <= len(times) <= 3, (name, _gaps(times))
        assert min(_gaps(times)) >= 2.45, (name, _gaps(times))


# -- stop codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [4400, 4403, 4408, 1009])
async def test_clients_stop_on_a_refusal_and_report_it(code: int, chromium: Browser) -> None:
    """On 4400, 4403, 4408 and 1009 each client stops after one attempt and reports the reason."""
    reason = f"refused for the test ({code})"
    async with (
        scripted([HELLO], code, reason) as for_python,
        scripted([HELLO], code, reason) as for_live,
        scripted([HELLO], code, reason) as for_widget,
    ):
        client = TickerClient(f"ws://127.0.0.1:{for_python.port}/ws", editions=["en"])
        with pytest.raises(SubscriptionRefused) as refused:
            async with asyncio.timeout(5):
                async for _ in client.events():
                    pass
        assert (refused.value.code, refused.value.reason) == (code, reason)
        live = await open_page(chromium, f"{for_live.url}/live.html")
        await expect(live.locator("#status")).to_have_text(f"refused: {reason}")
        widget = await open_page(chromium, f"{for_widget.url}/partner.html")
        await expect(widget.locator("flash-ticker")).to_have_attribute("data-error", reason)
        await asyncio.sleep(NO_RETRY_S)
        assert (len(for_python.attempts), len(for_live.attempts), len(for_widget.attempts)) == (1, 1, 1)
        await close_pages(live, widget)


def embed_widget(partner: PartnerSite, name: str, script_origin: str, attributes: str) -> str:
    """A partner page with one widget; returns its URL."""
    (partner.root / name).write_text(
        f'<!doctype html><meta charset="utf-8"><title>partner</title>'
        f'<script src="{script_origin}/web/ticker.js" defer></script>'
        f'<flash-ticker edition="en" {attributes}></flash-ticker>'
    )
    return f"{partner.origin}/{name}"


async def test_clients_stop_on_a_real_nodes_4400(
    stack: Stack, partner: PartnerSite, chromium: Browser
) -> None:
    """A real node's 4400 (an unknown topic or edition) stops each client after one attempt."""
    node = stack.service()
    async with proxy_to(node.port) as proxy:
        client = TickerClient(proxy.ws_url, editions=["en"], topics=["weather"])
        with pytest.raises(SubscriptionRefused) as refused:
            async with asyncio.timeout(5):
                async for _ in client.events():
                    pass
        assert (refused.value.code, refused.value.reason) == (4400, "topics: unknown topic 'weather'")
        live = await open_page(chromium, f"{proxy.url}/live?editions=fr")
        await expect(live.locator("#status")).to_have_text("refused: editions: unknown edition 'fr'")
        page = embed_widget(partner, "refused.html", node.url, f'topics="weather" server="{proxy.url}"')
        widget = await open_page(chromium, page)
        await expect(widget.locator("flash-ticker")).to_have_attribute(
            "data-error", "topics: unknown topic 'weather'"
        )
        await asyncio.sleep(NO_RETRY_S)
        assert len(proxy.times("/ws")) == 3


async def test_widget_over_sse_stops_on_a_refused_subscription(stack: Stack, chromium: Browser) -> None:
    """Where it can read the answer (its own origin), the widget over SSE stops on a 400 and
    reports the reason, instead of taking the refusal for a blocked transport."""
    node = stack.service()
    async with proxy_to(node.port) as proxy:
        page = await chromium.new_page()
        await page.add_init_script("delete window.WebSocket;")
        html = '<!doctype html><script src="/web/ticker.js"></script><flash-ticker topics="weather">'
        await page.route(
            f"{proxy.url}/sse-refused.html", lambda route: route.fulfill(body=html, content_type="text/html")
        )
        await page.goto(f"{proxy.url}/sse-refused.html")
        ticker = page.locator("flash-ticker")
        await expect(ticker).to_have_attribute("data-error", "topics: unknown topic 'weather'")
        await asyncio.sleep(NO_RETRY_S)
        await expect(ticker).to_have_attribute("data-transport", "sse")
        # One request: the client library reads SSE with fetch, which reads the refusal itself (with
        # an EventSource, the widget had to ask again to read it: two).
        assert len(proxy.times("/sse")) == 1


# Replaces the demo page's three widgets by one of the test's, once the page is parsed and before
# its deferred ticker.js runs (readyState "interactive" comes first), so that no other widget connects.
ONE_WIDGET = """
document.addEventListener("readystatechange", () => {
  if (document.readyState !== "interactive") return;
  for (const ticker of document.querySelectorAll("flash-ticker")) ticker.remove();
  const ticker = document.createElement("flash-ticker");
  for (const [name, value] of Object.entries(%s)) ticker.setAttribute(name, value);
  document.body.append(ticker);
});
"""


async def widget_page(
    chromium: Browser, proxy: CountingProxy, attributes: dict[str, str], init: str = ""
) -> Page:
    """The node's demo page `/` (its own origin, through `proxy`) with one widget of `attributes`.

    A page of the node's origin, not one a test route fulfils: Chromium's local network access
    checks block a WebSocket to 127.0.0.1 from a document that comes from nowhere."""
    page = await chromium.new_page()
    await page.add_init_script(init + ONE_WIDGET % orjson.dumps({"edition": "en", **attributes}).decode())
    await page.goto(f"{proxy.url}/")
    return page


async def test_clients_stop_on_a_real_nodes_414(stack: Stack, chromium: Browser) -> None:
    """An upgrade whose URL is too long (a topic filter of 9,000 characters) is answered 414 by the
    node, as JSON, before any WebSocket: TickerClient raises HandshakeRefused with the status and the
    body's field and message, and the widget stops with that reason (it cannot see the status of a
    failed WebSocket, so it asks /sse with the same query, which is refused the same way); each after
    one attempt."""
    node = stack.service()
    topics = "x" * 9000
    async with proxy_to(node.port) as for_python, proxy_to(node.port) as for_widget:
        client = TickerClient(for_python.ws_url, editions=["en"], topics=[topics])
        with pytest.raises(HandshakeRefused) as refused:
            async with asyncio.timeout(5):
                async for _ in client.events():
                    pass
        assert refused.value.code == 414
        assert refused.value.reason.startswith("request-target: the request target is longer than")
        page = await widget_page(chromium, for_widget, {"topics": topics})
        ticker = page.locator("flash-ticker")
        await expect(ticker).to_have_attribute(
            "data-error", re.compile("^request-target: the request target is longer than 8192 bytes$")
        )
        await asyncio.sleep(1.0)
        assert len(for_python.times("/ws")) == 1
        assert (len(for_widget.times("/ws")), len(for_widget.times("/sse"))) == (1, 1)
        await expect(ticker).to_have_attribute("data-transport", "ws")


async def test_clients_wait_longer_when_their_address_holds_its_share(
    stack: Stack,
    readers: list[Reader],
    chromium: Browser,
) -> None:
    """With FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT=1 and the slot taken, every client of the same
    address is refused: TickerClient and the widget over WebSocket with 1013 (retried no sooner than
    2.5 s, the widget staying on WebSocket), the widget over SSE with 429 and Retry-After: 5 (retried
    no sooner than 5 s, staying on SSE: the refusal is not taken for a blocked transport). Once the
    slot is free, TickerClient is served."""
    stack.worker()
    node = stack.service(FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT="1")
    holder = await open_reader(node.ws_url, "editions=en")
    readers.append(holder)
    await holder.next_of("snapshot")
    window_s = 7.0
    retries: list[Retry] = []
    async with (
        proxy_to(node.port) as for_python,
        proxy_to(node.port) as for_ws,
        proxy_to(node.port) as for_sse,
    ):
        ws_page = await widget_page(chromium, for_ws, {})
        sse_page = await widget_page(chromium, for_sse, {}, init="delete window.WebSocket;")
        consumer = Consumer(TickerClient(for_python.ws_url, editions=["en"], on_retry=retries.append))
        try:
            await asyncio.sleep(window_s + 0.5)
            for name, times in (("TickerClient", for_python.times("/ws")), ("widget", for_ws.times("/ws"))):
                times = within(times, window_s)
                assert 2 <= len(times) <= 3, (name, _gaps(times))
                assert min(_gaps(times)) >= 2.45, (name, _gaps(times))
            assert (
                retries[0].reason
                == "closed 1013: too many connections from your address (at most 1); retry later"
            )
            # Each SSE attempt is one fetch, which reads the 429 and its Retry-After itself (with an
            # EventSource, the widget had to ask again to read it: two requests an attempt).
            sse = within(for_sse.times("/sse"), window_s)
            assert len(sse) == 2, _gaps(sse)
            assert _gaps(sse)[0] >= 4.95, _gaps(sse)
            for page in (ws_page, sse_page):
                assert await page.locator("flash-ticker").get_attribute("data-error") is None
            assert await ws_page.locator("flash-ticker").get_attribute("data-transport") == "ws"
            assert await sse_page.locator("flash-ticker").get_attribute("data-transport") == "sse"
            await ws_page.close()
            await sse_page.close()
            await holder.ws.close()
            await consumer.wait_for("snapshot", timeout_s=16)  # its next attempt, 2.5 to 5 s away
        finally:
            await consumer.stop()


async def test_ticker_client_honours_a_429s_retry_after() -> None:
    """A handshake answered 429 with Retry-After: 6 (a proxy's rate limit, say) is retried no sooner
    than 6 s, where the longer wait alone would be 2.5 to 5 s."""
    attempts: list[float] = []
    second = asyncio.Event()

    def refuse(connection: ServerConnection, request: Request) -> Response:
        attempts.append(time.monotonic())
        if len(attempts) == 2:
            second.set()
        response = connection.respond(429, "slow down\n")
        response.headers["Retry-After"] = "6"
        return response

    async def never(ws: ServerConnection) -> None:  # no upgrade is ever accepted
        await ws.close()

    async with serve(never, "127.0.0.1", 0, process_request=refuse) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        consumer = Consumer(TickerClient(f"ws://127.0.0.1:{port}/ws", editions=["en"]))
        # The second attempt comes 6 to 7.2 s after the first; one that ignored Retry-After would come
        # 2.5 to 5 s after it, and fail the gap below. Nothing can come after the second sooner than 6 s.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(second.wait(), 10.0)
        await consumer.stop()
    assert len(attempts) == 2, _gaps(attempts)
    assert _gaps(attempts)[0] >= 6.0, _gaps(attempts)


# -- the cursor check ----------------------------------------------------------------------------


def _line(line_id: str, text: str, second: int, version: int = 1) -> dict[str, Any]:
    """A line published at 16:43:<second>, so that clients order lines the same way."""
    at = f"2026-11-25T16:43:{second:02d}.000Z"
    return {
        "id": line_id, "version": version, "edition": "en", "language": "en", "direction": "ltr",
        "text": text, "urgency": "routine", "iptc_urgency": 5, "topics": [], "url": None, "source": None,
        "status": "usable", "pinned": False, "published_at": at, "updated_at": at,
        "expires_at": "2026-11-26T04:43:53.440Z", "embargoed": None, "author": "desk",
    }  # fmt: skip


def _event(kind: str, cursor: str, line: dict[str, Any]) -> dict[str, Any]:
    if kind == "retract":
        return {"type": kind, "edition": "en", "cursor": cursor, "id": line["id"], "reason": "killed"}
    return {"type": kind, "edition": "en", "cursor": cursor, "line": line}


# Cursors compare as numbers: 100-10 is after 100-5 and 100-9 (as strings it would be before both).
PASSED = (
    [
        {**SNAPSHOT, "cursor": "100-5", "lines": [_line("en-a", "in the snapshot", 1)]},
        _event("line", "100-4", _line("en-b", "older: dropped", 2)),
        _event("line", "100-5", _line("en-c", "same cursor: dropped", 3)),
        _event("line", "100-10", _line("en-d", "newer: kept", 4)),
        _event("update", "99-99", _line("en-a", "older correction: dropped", 1, version=2)),
        _event("line", "100-9", _line("en-g", "before the last one: dropped", 5)),
        _event("retract", "100-3", _line("en-d", "", 4)),
    ],
    [("snapshot", "100-5"), ("line", "100-10")],
    ["newer: kept", "in the snapshot"],
)
# A snapshot replaces everything, even a reset one at a lower cursor (a new ticker epoch).
RESET = (
    [
        {**SNAPSHOT, "cursor": "100-5", "lines": [_line("en-a", "in the first snapshot", 1)]},
        _event("line", "100-6", _line("en-d", "before the reset", 2)),
        {**SNAPSHOT, "cursor": "50-0", "reset": True, "lines": [_line("en-f", "in the reset snapshot", 3)]},
        _event("line", "50-0", _line("en-x", "same cursor after the reset: dropped", 4)),
        _event("line", "50-1", _line("en-e", "after the reset", 5)),
    ],
    [("snapshot", "100-5"), ("line", "100-6"), ("snapshot", "50-0"), ("line", "50-1")],
    ["after the reset", "in the reset snapshot"],
)


@pytest.mark.parametrize(("events", "yielded", "shown"), [PASSED, RESET], ids=["passed", "reset"])
async def test_clients_drop_events_they_have_already_passed_and_follow_any_snapshot(
    events: list[dict[str, Any]],
    yielded: list[tuple[str, str]],
    shown: list[str],
    chromium: Browser,
) -> None:
    """Each client drops a line/update/retract whose cursor is not after the one it holds for its
    edition (compared as numbers), and lets any snapshot replace what it holds and set the cursor."""
    script = [HELLO, SUBSCRIBED, *events]
    async with (
        scripted(script, 4400, "done") as for_python,
        scripted(script, 4400, "done") as for_live,
        scripted(script, 4400, "done") as for_widget,
    ):
        client = TickerClient(f"ws://127.0.0.1:{for_python.port}/ws", editions=["en"])
        got: list[tuple[str, str]] = []
        with pytest.raises(SubscriptionRefused):
            async for event in client.events():
                got.append((event["type"], event["cursor"]))
        assert got == yielded
        live = await open_page(chromium, f"{for_live.url}/live.html")
        await expect(live.locator("#status")).to_have_text("refused: done")
        await expect(live.locator("#lines .fw-text")).to_have_text(shown)
        widget = await open_page(chromium, f"{for_widget.url}/partner.html")
        await expect(widget.locator("flash-ticker")).to_have_attribute("data-error", "done")
        await expect(widget.locator("flash-ticker .line .text")).to_have_text(shown)
        await close_pages(live, widget)


# -- the dead-connection timer -------------------------------------------------------------------


async def test_ticker_client_drops_a_silent_connection_after_two_and_a_half_heartbeats(stack: Stack) -> None:
    """A connection on which nothing arrives (frozen in a relay) is dropped by TickerClient
    2.5 x heartbeat_s after its last message, and the line posted meanwhile still arrives."""
    stack.worker()
    node = stack.service(FLASHWIRE_HEARTBEAT_S=str(HEARTBEAT_S))
    editor = await stack.token("editor", ["en"])
    async with proxy_to(node.port) as proxy:
        consumer = Consumer(TickerClient(proxy.ws_url, editions=["en"], include_control=True))
        try:
            await consumer.wait_for("snapshot")
            await consumer.wait_for("heartbeat")
            proxy.freeze()
            async with httpx.AsyncClient(base_url=node.url) as api:
                await post_line(api, editor, "posted while the connection hung")
            await consumer.wait_for("line", "posted while the connection hung", timeout_s=8)
        finally:
            await consumer.stop()
    _, second = proxy.times("/ws")[:2]
    last_message = max(at for at, _ in consumer.received if at < second)
    silence_s = second - last_message
    # Then the first backoff step, at most 0.25 s, and some slack.
    assert 2.5 * HEARTBEAT_S <= silence_s <= 2.5 * HEARTBEAT_S + 0.25 + 0.6, silence_s
    assert consumer.client.reconnects == 1


async def test_browser_clients_drop_a_silent_connection_after_two_and_a_half_heartbeats(
    stack: Stack,
    partner: PartnerSite,
    chromium: Browser,
) -> None:
    """LiveTicker and the widget drop a connection frozen in a relay 2.5 x heartbeat_s after its
    last message (checked a few times per period), and show the line posted meanwhile."""
    stack.worker()
    node = stack.service(FLASHWIRE_HEARTBEAT_S=str(HEARTBEAT_S))
    editor = await stack.token("editor", ["en"])
    text = "posted while the connections hung"
    async with proxy_to(node.port) as for_live, proxy_to(node.port) as for_widget:
        live = await open_page(chromium, f"{for_live.url}/live?editions=en", WEBSOCKET_LOG)
        url = embed_widget(partner, "hung.html", node.url, f'server="{for_widget.url}"')
        widget = await open_page(chromium, url, WEBSOCKET_LOG)
        await expect(live.locator("#status")).to_have_text("live")
        await widget.wait_for_function("window.__sockets.length === 1 && window.__sockets[0].last !== null")
        await asyncio.sleep(0.3)  # the rest of the catch-up
        for_live.freeze()
        for_widget.freeze()
        async with httpx.AsyncClient(base_url=node.url) as api:
            await post_line(api, editor, text)
        await expect(live.locator("#lines .fw-text")).to_have_text([text], timeout=12_000)
        await expect(widget.locator("flash-ticker .line .text")).to_have_text([text], timeout=12_000)
        for name, page in (("LiveTicker", live), ("widget", widget)):
            sockets = await page.evaluate("window.__sockets")
            assert len(sockets) == 2, (name, sockets)
            silence_s = (sockets[1]["made"] - sockets[0]["last"]) / 1000
            # Checked every heartbeat_s / 4, then the first backoff step (at most 0.25 s).
            most_s = 2.5 * HEARTBEAT_S + HEARTBEAT_S / 4 + 0.25 + 0.55
            assert 2.5 * HEARTBEAT_S <= silence_s <= most_s, (name, silence_s)


# -- flashwire listen ----------------------------------------------------------------------------


async def test_listen_says_when_the_connection_is_lost_and_back(stack: Stack, tmp_path: Path) -> None:
    """`flashwire listen` reports on stderr a lost connection with the wait before the next
    attempt, and reports when it is back; lines keep coming on stdout."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    listen_log = tmp_path / "listen.err"
    command = ["listen", "--url", node.url, "--editions", "en", "--count", "1"]
    with listen_log.open("wb") as errors:
        listen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "flashwire.cli", *command, stdout=PIPE, stderr=errors, cwd=ROOT
        )
    try:
        await asyncio.sleep(1.5)
        node.terminate()
        for _ in range(100):
            if "connection lost" in listen_log.read_text():
                break
            await asyncio.sleep(0.1)
        node.start()
        node.wait_ready()
        async with httpx.AsyncClient(base_url=node.url) as api:
            await post_line(api, editor, "after the restart")
        out, _ = await asyncio.wait_for(listen.communicate(), 30)
    finally:
        if listen.returncode is None:
            listen.kill()
            await listen.wait()
    said = listen_log.read_text()
    assert re.search(r"flashwire: connection lost \(.+\); reconnecting in \d+\.\d s", said), said
    assert "flashwire: connection back; resumed from the last cursors" in said, said
    assert "after the restart" in out.decode()
    assert listen.returncode == 0
