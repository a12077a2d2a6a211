"""The AsyncAPI document of the reader protocol is valid AsyncAPI 3.0.0 and covers every message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft7Validator

from flashwire.core.protocol import CLIENT_MESSAGES, SERVER_MESSAGES, SSE_MESSAGES
from flashwire.core.settings import Settings
from flashwire.service.asyncapi import asyncapi_document
from tests.protocol_schemas import closed, payload_validator

# The official schema of the specification, vendored unchanged (tests/schemas/README.md).
SPEC_SCHEMA = orjson.loads((Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json").read_bytes())


def _errors(document: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(SPEC_SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(asyncapi_document(Settings.from_env({})))


def test_the_document_validates_against_the_asyncapi_3_0_0_schema(document: dict[str, Any]) -> None:
    """What service/asyncapi.py generates is a valid AsyncAPI 3.0.0 document (and serialises as JSON)."""
    assert _errors(orjson.loads(orjson.dumps(document))) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("operations", "sendTickerOverWebSocket", "action"), "publish"),  # AsyncAPI 2 wording
        (("channels", "ws", "bindings", "ws", "method"), "PUT"),
        (("components", "messages", "hello", "payload"), 42),
    ],
)
def test_the_validation_notices_a_broken_document(
    document: dict[str, Any], path: tuple[str, ...], value: object
) -> None:
    """The check above is not vacuous: a document broken in one place is refused."""
    broken = copy.deepcopy(document)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert _errors(broken) != []


def test_every_message_of_the_protocol_is_in_its_channels(document: dict[str, Any]) -> None:
    """/ws carries every server and client message; /sse every server message but pong."""
    channels = document["channels"]
    assert set(channels["ws"]["messages"]) == set(SERVER_MESSAGES) | set(CLIENT_MESSAGES)
    assert set(channels["sse"]["messages"]) == set(SSE_MESSAGES) == set(SERVER_MESSAGES) - {"pong"}
    assert channels["ws"]["address"] == "/ws" and channels["sse"]["address"] == "/sse"
    for name in [*SERVER_MESSAGES, *CLIENT_MESSAGES]:
        assert document["components"]["messages"][name]["payload"]["$ref"].startswith("#/components/schemas/")


def test_the_payload_schemas_resolve_and_describe_their_message(document: dict[str, Any]) -> None:
    """Each payload schema (with the line inside it) accepts the example of docs/protocol.md and refuses a
    message of another type or a malformed cursor."""
    line = {
        "id": "en-711d46440083a926", "version": 1, "edition": "en", "language": "en", "direction": "ltr",
        "text": "Taiwan's President: 'One country, two regimes' is a red line for Taiwan.",
        "urgency": "flash", "iptc_urgency": 1, "topics": ["politics", "asia-pacific"],
        "url": "https://example.com/news/taiwan", "source": None, "status": "usable", "pinned": False,
        "published_at": "2026-11-25T16:43:53.440Z", "updated_at": "2026-11-25T16:43:53.440Z",
        "expires_at": "2026-11-26T04:43:53.440Z", "embargoed": None, "author": "dev-editor",
    }  # fmt: skip
    event = {"type": "line", "edition": "en", "cursor": "1795625033442-0", "line": line}
    validator = payload_validator(document, "line")
    assert list(validator.iter_errors(event)) == []
    assert list(validator.iter_errors({**event, "type": "update"})) != []
    assert list(validator.iter_errors({**event, "cursor": "1795625033442-x"})) != []
    assert list(validator.iter_errors({**event, "line": {**line, "urgency": "breaking"}})) != []
    assert list(payload_validator(document, "heartbeat").iter_errors({"type": "heartbeat"})) == []


def test_published_payloads_are_open_and_the_closed_variant_is_strict(document: dict[str, Any]) -> None:
    """docs/protocol.md 1 and 2.2: readers ignore fields they do not know, and the server ignores unknown
    fields of `subscribe` and `ping`, so the served schemas accept them, at the top and in the line; the
    strict variant the frame tests use refuses each of them."""
    line = {
        "id": "en-711d46440083a926", "version": 1, "edition": "en", "language": "en", "direction": "ltr",
        "text": "Floods close the port", "urgency": "urgent", "iptc_urgency": 3, "topics": [],
        "url": None, "source": None, "status": "usable", "pinned": False,
        "published_at": "2026-11-25T16:43:53.440Z", "updated_at": "2026-11-25T16:43:53.440Z",
        "expires_at": "2026-11-26T04:43:53.440Z", "embargoed": None, "author": "dev-editor",
    }  # fmt: skip
    later_fields = [
        ("hello", {"type": "hello", "protocol": 1, "node": "n1", "heartbeat_s": 15, "editions": ["en"],
                   "topics": ["mena"], "region": "eu"}),
        ("line", {"type": "line", "edition": "en", "cursor": "1-0", "line": {**line, "byline": "x"}}),
        ("subscribe", {"type": "subscribe", "editions": ["en"], "client": "app/2.1"}),
        ("ping", {"type": "ping", "id": 7}),
    ]  # fmt: skip
    strict = closed(document)
    for name, message in later_fields:
        assert list(payload_validator(document, name).iter_errors(message)) == [], name
        assert list(payload_validator(strict, name).iter_errors(message)) != [], name
