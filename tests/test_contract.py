"""The one text rule and the one URL rule at the API: every free-text field and every link, in process.

Each input of issue 9 ("One rule, applied unevenly") and the rest of its class is sent to the
Starlette app (httpx over ASGI, lifespan run, a real redis-server: the `app` fixture) and must
come back 422 in the error body, naming the field as the client sent it, with nothing written to
the desk stream. Valid free text (Arabic with its joiners, an empty optional source) still passes.
"""

from __future__ import annotations

from typing import Any

import pytest

from flashwire.core.keys import Keys
from tests.conftest import InProcessApp, auth

KEYS = Keys("fw")

# (case id, value): links every field that takes one must refuse.
BAD_URLS = [
    ("noncharacter-uffff", "https://example.com/news\uffff"),
    ("credentials", "https://user:pass@example.com/news"),
    ("reuters-lookalike-credentials", "https://reuters.com@evil.example/"),
    ("port-99999", "https://example.com:99999/news"),
    ("port-zero", "https://example.com:0/news"),
    ("space", "https://example.com/breaking news"),
    ("nul", "https://example.com/\x00"),
    ("bidi-override", "https://example.com/\u202egpj.exe"),
    ("no-host", "https:///news"),
    ("javascript", "javascript:alert(1)"),
    ("angle-bracket", "https://example.com/<script>"),
]
# (case id, value): free text every free-text field must refuse.
BAD_TEXT = [
    ("nul", "Minister\x00 resigns"),
    ("escape", "Minister \x1b[31mresigns"),
    ("bidi-override", "Reuters\u202e"),
    ("bidi-isolate", "Minister \u2066resigns"),
    ("zero-width-space", "Minister\u200bresigns"),
    ("noncharacter", "Minister resigns\uffff"),
    ("private-use", "Minister \ue000resigns"),
    ("c1-csi", "Minister \x9b31mresigns"),
]
# Headlines that show nothing: refused as text.
INVISIBLE = [
    ("only-zwj", "\u200d"),
    ("only-hangul-filler", "\u3164"),
    ("only-braille-blank", "\u2800"),
    ("only-combining-marks", "\u0301\u0301"),
    ("zwj-and-spaces", " \u200d \u200d "),
]


def _line(**fields: Any) -> dict[str, Any]:
    return {"edition": "en", "text": "Parliament dissolved; elections called for March.", **fields}


async def _desk_length(app: InProcessApp) -> int:
    redis = app.redis()
    try:
        return int(await redis.xlen(KEYS.desk))
    finally:
        await redis.aclose()


def _assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == 422 and error["code"] == "invalid" and error["message"], error
    assert error["field"] == field, error


def _post_cases() -> list[Any]:
    cases = [pytest.param({"url": value}, "url", id=f"url-{case}") for case, value in BAD_URLS]
    cases += [pytest.param({"source": value}, "source", id=f"source-{case}") for case, value in BAD_TEXT]
    cases += [pytest.param({"text": value}, "text", id=f"text-{case}") for case, value in BAD_TEXT]
    cases += [pytest.param({"text": value}, "text", id=f"text-{case}") for case, value in INVISIBLE]
    cases += [pytest.param({"topics": ["politics", "\x1b[0m"]}, "topics[1]", id="topic-escape")]
    return cases


@pytest.mark.parametrize(("fields", "field"), _post_cases())
async def test_a_post_breaking_the_rules_is_refused_naming_the_field(
    app: InProcessApp, fields: dict[str, Any], field: str
) -> None:
    """POST /api/v1/lines refuses each bad link and free text with 422 naming its field; nothing reaches
    the desk stream."""
    token = await app.token()
    response = await app.client.post("/api/v1/lines", json=_line(**fields), headers=auth(token))
    _assert_refused(response, field)
    assert await _desk_length(app) == 0


async def _posted(app: InProcessApp, token: str) -> str:
    response = await app.client.post("/api/v1/lines", json=_line(), headers=auth(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _follow_up_cases() -> list[Any]:
    cases = [
        pytest.param("retraction", {"reason": value}, "reason", id=f"reason-{case}")
        for case, value in BAD_TEXT
    ]
    cases += [
        pytest.param("corrections", {"url": value}, "url", id=f"correction-url-{case}")
        for case, value in BAD_URLS[:4]
    ]
    cases += [
        pytest.param("corrections", {"source": "\u202eAFP"}, "source", id="correction-source-bidi"),
        pytest.param("corrections", {"text": "\u3164"}, "text", id="correction-text-hangul-filler"),
        pytest.param("corrections", {"text": "\u2800"}, "text", id="correction-text-braille-blank"),
    ]
    return cases


@pytest.mark.parametrize(("path", "body", "field"), _follow_up_cases())
async def test_a_follow_up_breaking_the_rules_is_refused_naming_the_field(
    app: InProcessApp, path: str, body: dict[str, Any], field: str
) -> None:
    """Retraction reasons and corrections follow the same rules: 422 naming the field, nothing on the desk."""
    token = await app.token(role="chief")
    line_id = await _posted(app, token)
    before = await _desk_length(app)
    response = await app.client.post(f"/api/v1/lines/{line_id}/{path}", json=body, headers=auth(token))
    _assert_refused(response, field)
    assert await _desk_length(app) == before


@pytest.mark.parametrize(
    ("name", "field"),
    [
        pytest.param("\x1b[31mroot\x1b[0m", "name", id="ansi-escape"),
        pytest.param("\u202eroot", "name", id="bidi-override"),
        pytest.param("ro\x00ot", "name", id="nul"),
        pytest.param("\u200d", "name", id="invisible"),
        pytest.param("   ", "name", id="blank"),
    ],
)
async def test_a_token_name_breaking_the_text_rule_is_refused(
    app: InProcessApp, name: str, field: str
) -> None:
    """POST /api/v1/tokens refuses a name with terminal escapes or nothing visible, and creates nothing."""
    admin = await app.token(role="admin", editions=["*"], name="Root")
    response = await app.client.post(
        "/api/v1/tokens", json={"name": name, "role": "editor", "editions": ["en"]}, headers=auth(admin)
    )
    _assert_refused(response, field)
    listed = await app.client.get("/api/v1/tokens", headers=auth(admin))
    assert [token["name"] for token in listed.json()["tokens"]] == ["Root"]


async def test_valid_free_text_passes_cleaned(app: InProcessApp) -> None:
    """What the rules must not refuse: Arabic with ZWNJ/ZWJ and direction marks, a blank optional source
    (null), a reason of whitespace (none), a link with a port and an IPv6 host."""
    token = await app.token(role="chief", editions=["ar", "en"])
    text = "\u200fعاجل: \u0645\u200c\u0646 \u0644\u200d\u0627   الانتخابات\u200e 2026"  # noqa: RUF001
    response = await app.client.post(
        "/api/v1/lines",
        json={"edition": "ar", "text": text, "source": "   ", "url": "https://[2001:db8::1]:8443/a?b=c%20d"},
        headers=auth(token),
    )
    assert response.status_code == 201, response.text
    line = response.json()["line"]
    assert line["source"] is None
    assert line["text"] == "\u200fعاجل: \u0645\u200c\u0646 \u0644\u200d\u0627 الانتخابات\u200e 2026"  # noqa: RUF001
    retraction = await app.client.post(
        f"/api/v1/lines/{response.json()['id']}/retraction", json={"reason": " \n "}, headers=auth(token)
    )
    assert retraction.status_code == 201, retraction.text
    assert retraction.json()["reason"] == ""


async def test_an_unknown_field_is_refused_by_its_name(app: InProcessApp) -> None:
    """Unknown fields are refused as before, named as sent, also in a correction and a token request."""
    chief = await app.token(role="chief")
    admin = await app.token(role="admin", editions=["*"], name="Root")
    line_id = await _posted(app, chief)
    cases = [
        ("/api/v1/lines", _line(colour="red"), chief, "colour"),
        (f"/api/v1/lines/{line_id}/corrections", {"status": "usable"}, chief, "status"),
        (f"/api/v1/lines/{line_id}/retraction", {"why": "x"}, chief, "why"),
        ("/api/v1/tokens", {"name": "Z", "editions": ["en"], "admin": True}, admin, "admin"),
    ]
    for path, body, token, field in cases:
        _assert_refused(await app.client.post(path, json=body, headers=auth(token)), field)
