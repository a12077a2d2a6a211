"""The one cursor rule (flashwire/core/cursors.py), wherever a cursor is read: the subscription
(WebSocket and SSE, query and Last-Event-ID), the hub, and the Python client."""

from __future__ import annotations

import httpx
import orjson
import pytest

from flashwire.cli import main
from flashwire.client import TickerClient
from flashwire.core.cursors import U64_MAX, cursor_key, is_cursor, parse_since
from flashwire.core.settings import Settings
from flashwire.service.subscription import SubscriptionError, from_query
from tests.conftest import Reader, Stack, open_reader

MALFORMED = [
    "",
    "-",
    "1-",
    "-1",
    "1-2-3",
    "abc",
    " 1-0",
    "1-0 ",
    "1-0\n",  # re.match("^…$") accepts it, and it would split the SSE `id:` line
    "1\n",
    "1_000-0",  # int() accepts digit separators
    "+1-0",
    "\u0661\u0662-\u0663",  # Arabic-Indic digits: int() reads them, Redis does not
    "\uff11-0",  # FULLWIDTH DIGIT ONE
    f"{U64_MAX + 1}-0",
    f"0-{U64_MAX + 1}",
    "123456789012345678901-0",
]


def test_cursors_order_as_two_integers() -> None:
    """(ms, seq) order, not string order; a bare ms is ms-0; the largest parts Redis allows pass."""
    cursors = ["10-0", "9-10", "9", "1732550400000-0", "9-2", "0-0"]
    assert sorted(cursors, key=cursor_key) == ["0-0", "9", "9-2", "9-10", "10-0", "1732550400000-0"]
    assert cursor_key("9") == cursor_key("9-0") == (9, 0)
    assert cursor_key(f"{U64_MAX}-{U64_MAX}") == (U64_MAX, U64_MAX)


@pytest.mark.parametrize("cursor", MALFORMED)
def test_a_malformed_cursor_is_refused_everywhere_it_is_read(cursor: str) -> None:
    """The parser, the check, and the subscription (query `since`, naming the field) agree."""
    with pytest.raises(ValueError, match="malformed cursor"):
        cursor_key(cursor)
    assert not is_cursor(cursor)
    with pytest.raises(SubscriptionError) as refused:
        from_query(Settings.from_env({}), {"editions": "en", "since": cursor or "x"})
    assert refused.value.field == "since"


@pytest.mark.parametrize("cursor", ["9-0\n", "9_0-0", "\u0669-\u0660"])
def test_the_client_neither_follows_nor_resumes_from_a_malformed_cursor(cursor: str) -> None:
    """A message whose cursor breaks the rule is dropped and not kept for `since` (int() would have
    read all three, and the next connection would have been refused with 4400)."""
    client = TickerClient("ws://127.0.0.1:1/ws", editions=["en"], since={"en": "5-0"})
    assert client._accept({"type": "line", "edition": "en", "cursor": cursor}) is False
    assert client.cursors == {"en": "5-0"}
    assert client._accept({"type": "line", "edition": "en", "cursor": "5-1"}) is True
    assert client.cursors == {"en": "5-1"}


async def test_a_cursor_with_a_trailing_newline_is_refused_over_sse_and_websocket(
    stack: Stack, readers: list[Reader]
) -> None:
    """`since=1-0%0A` is a 400 naming `since` on /sse (it would otherwise be echoed into the `id:`
    line and split it), and a 4400 naming `since` on /ws; the header form is refused alike."""
    node = stack.service()
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as client:
        for params, headers in [
            ({"edition": "en", "since": "1-0\n"}, {}),
            ({"editions": "en"}, {"Last-Event-ID": "en:1_0"}),
        ]:
            # Streamed: an accepted subscription would be an endless event stream.
            async with client.stream("GET", "/sse", params=params, headers=headers) as response:
                assert response.status_code == 400, (params, headers, response.status_code)
                body = orjson.loads(await response.aread())
            assert body["error"]["field"] == "since"
    # The bare form (the `en:<cursor>` form with a newline: tests/test_cursor_strictness.py).
    reader = await open_reader(node.ws_url, "edition=en&since=1-0%0A")
    readers.append(reader)
    assert await reader.until_closed() == 4400
    assert reader.close_reason is not None and reader.close_reason.startswith("since: malformed cursor")


@pytest.mark.parametrize(
    ("since", "editions", "cursors"),
    [
        ("1795625033442-0", ["en"], {"en": "1795625033442-0"}),
        ("en:1-0,ar:2-5", ["en", "ar", "es"], {"en": "1-0", "ar": "2-5"}),
        ("en:1-0, ar:2-5,", ["en", "ar"], {"en": "1-0", "ar": "2-5"}),
        ("es:9", ["en"], {"es": "9"}),  # syntax only: whether es is subscribed is the caller's check
    ],
)
def test_since_is_read_by_one_function(since: str, editions: list[str], cursors: dict[str, str]) -> None:
    """The query syntax of `since` (docs/protocol.md 2.1): pairs, or a bare cursor for one edition."""
    assert parse_since(since, editions) == cursors


@pytest.mark.parametrize(
    ("since", "editions", "message"),
    [
        ("1-0", ["en", "ar"], "name the edition of each cursor"),
        ("1-0", [], "name the edition of each cursor"),
        ("en:1-0,2-0", ["en", "ar"], "name the edition of each cursor"),
        (":1-0", ["en"], "name the edition of each cursor"),
        ("en:abc", ["en"], "malformed cursor 'abc' for 'en'"),
        ("1-0\n", ["en"], "malformed cursor"),
    ],
)
def test_since_errors_say_what_is_wrong(since: str, editions: list[str], message: str) -> None:
    """Each refusal names its cause; the subscription reports it under `since`."""
    with pytest.raises(ValueError, match=message):
        parse_since(since, editions)
    with pytest.raises(SubscriptionError, match=message) as refused:
        from_query(Settings.from_env({}), {"editions": ",".join(editions) or "en,ar", "since": since})
    assert refused.value.field == "since"


@pytest.mark.parametrize(
    ("editions", "since", "message"),
    [("en,ar", "1-0", "name the edition of each cursor"), ("en", "en:x-1", "malformed cursor 'x-1'")],
)
def test_flashwire_listen_reads_since_by_the_same_rule(editions: str, since: str, message: str) -> None:
    """`flashwire listen --since` refuses what the server would, before connecting (port 1: nothing
    listens there, so a connection attempt would only retry)."""
    with pytest.raises(SystemExit) as stopped:
        main(["listen", "--url", "http://127.0.0.1:1", "--editions", editions, "--since", since])
    assert message in str(stopped.value.code)
