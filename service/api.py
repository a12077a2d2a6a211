"""The newsroom API under /api/v1: editorial actions on lines, and reading them back.

Every write is authorised against the token's role and editions, validated
field by field, checked against the line's current state, and answered 201
only once the action is in the desk stream.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, ms_from_iso, now_ms
from flashwire.core.keys import Keys
from flashwire.core.lines import ValidationError, parse_correction, parse_expiry, parse_post, parse_retraction
from flashwire.core.settings import Settings
from flashwire.service.desk import Desk, IdempotencyConflict, UnknownLine
from flashwire.service.errors import ApiError
from flashwire.service.http import LINE_ID_RE, authenticate, authorise, edition_param, invalid, json_body
from flashwire.service.hub import Hub
from flashwire.service.openapi import openapi_for
from flashwire.service.reach import read_reach
from flashwire.service.tokens import Token

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")


def _idempotency(request: Request, token: Token, body: Any) -> tuple[str, str, str] | None:
    """(token id, key, fingerprint) of a request with an Idempotency-Key, else None.

    The fingerprint covers the method, the path and the parsed JSON body in a canonical form
    (keys sorted, no whitespace): a retry is the same request however its client library
    serialised it, and a different request under the same key is a conflict.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY_RE.match(key):
        raise ApiError(422, "invalid", "must be 1-200 printable ASCII characters", field="Idempotency-Key")
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    fingerprint = hashlib.sha256(
        request.method.encode() + request.url.path.encode() + b"\n" + canonical
    ).hexdigest()
    return token.id, key, fingerprint


def _actor(token: Token) -> dict[str, str]:
    return {"token": token.id, "name": token.name, "role": token.role}


async def _submit(
    request: Request,
    action: dict[str, Any],
    response: dict[str, Any],
    idempotency: tuple[str, str, str] | None,
    *,
    location: str | None = None,
) -> JSONResponse:
    desk: Desk = request.app.state.desk
    try:
        accepted = await desk.submit(action, response, idempotency=idempotency)
    except IdempotencyConflict as exc:
        raise ApiError(409, "conflict", str(exc), field="Idempotency-Key") from None
    except UnknownLine:
        raise ApiError(404, "not_found", f"no line {action['id']!r}", field="id") from None
    headers = {"Location": location.format(id=accepted.body["id"])} if location else {}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(accepted.body, status_code=201, headers=headers)


async def _replay(desk: Desk, idempotency: tuple[str, str, str] | None) -> Response | None:
    """The first answer to a retried request, before anything is validated again: a retry gets
    what the first attempt got, even if (say) its expiry time has passed since."""
    try:
        earlier = await desk.replayed(idempotency)
    except IdempotencyConflict as exc:
        raise ApiError(409, "conflict", str(exc), field="Idempotency-Key") from None
    if earlier is None:
        return None
    headers = {"Idempotent-Replayed": "true"}
    if earlier.body.get("action") == "post":
        headers["Location"] = f"/api/v1/lines/{earlier.body['id']}"
    return JSONResponse(earlier.body, status_code=201, headers=headers)


async def post_line(request: Request) -> Response:
    """POST /api/v1/lines: publish a new line, or schedule it with `embargo_until`."""
    settings: Settings = request.app.state.settings
    token = await authenticate(request)
    body, _ = await json_body(request)
    earlier = await _replay(request.app.state.desk, _idempotency(request, token, body))
    if earlier is not None:
        return earlier
    edition = body.get("edition") if isinstance(body, dict) else None
    if isinstance(edition, str) and edition in settings.editions:
        authorise(token, "post", edition)
    try:
        post = parse_post(body, settings)
    except ValidationError as exc:
        raise invalid(exc) from None
    authorise(token, "post", post.edition)
    if post.embargo_until_ms is not None:
        authorise(token, "schedule", post.edition)
    line_id = f"{post.edition}-{secrets.token_hex(8)}"
    at = now_ms()
    line = {
        "text": post.text,
        "urgency": post.urgency,
        "topics": list(post.topics),
        "url": post.url,
        "source": post.source,
        "expires_at_ms": post.expires_at_ms,
        "embargo_until_ms": post.embargo_until_ms,
    }
    action = {
        "action": "post",
        "id": line_id,
        "edition": post.edition,
        "at": at,
        "by": _actor(token),
        "line": line,
    }
    preview = {k: v for k, v in line.items() if not k.endswith("_ms")}
    preview["expires_at"] = iso_from_ms(post.expires_at_ms)
    preview["embargoed"] = iso_from_ms(post.embargo_until_ms) if post.embargo_until_ms else None
    response = {
        "action": "post",
        "id": line_id,
        "edition": post.edition,
        "accepted_at": iso_from_ms(at),
        "scheduled": post.embargo_until_ms is not None,
        "line": {"id": line_id, "edition": post.edition, **preview},
    }
    return await _submit(
        request, action, response, _idempotency(request, token, body), location="/api/v1/lines/{id}"
    )


# What each follow-up action requires of the line's current state, and the refusal otherwise.
def _state_error(action: str, line: dict[str, Any]) -> str | None:
    status = line["status"]
    if status == "canceled":
        return (
            "the line was retracted" if line.get("embargoed") is None else "the scheduled line was cancelled"
        )
    if line.get("expired"):
        return "the line has expired"
    if action == "cancel" and status != "withheld":
        return "only a scheduled line can be cancelled; retract a published one"
    if action == "cancel" and line.get("embargoed") and ms_from_iso(line["embargoed"]) <= now_ms():
        return "the line's release time has passed: it is being published; retract it instead"
    if action in {"retract", "pin", "unpin"} and status != "usable":
        return "the line is scheduled and not yet published; cancel it instead"
    if action == "pin" and line.get("pinned"):
        return "the line is already pinned"
    if action == "unpin" and not line.get("pinned"):
        return "the line is not pinned"
    return None


def _check_expiry_change(token: Token, action: str, fields: dict[str, Any], line: dict[str, Any]) -> None:
    """Bringing a line's expiry forward removes it from readers sooner: a kill by another name,
    so it takes the right to retract. Extending it is an editor's call."""
    new_ms = (
        fields.get("expires_at_ms") if action == "expiry" else fields.get("changes", {}).get("expires_at_ms")
    )
    if new_ms is None or token.may("retract", line["edition"]):
        return
    if new_ms < ms_from_iso(line["expires_at"]):
        raise ApiError(
            403,
            "forbidden",
            "shortening a line's expiry removes it sooner; it needs a chief editor",
            field="expires_at",
        )


BodyParser = Callable[[Any, Settings], dict[str, Any]]


def _parse_correct(body: Any, settings: Settings) -> dict[str, Any]:
    return {"changes": parse_correction(body, settings).changes}


def _parse_retract(body: Any, settings: Settings) -> dict[str, Any]:
    return {"reason": parse_retraction(body)}


def _parse_expiry(body: Any, settings: Settings) -> dict[str, Any]:
    return {"expires_at_ms": parse_expiry(body)}


def _no_body(body: Any, settings: Settings) -> dict[str, Any]:
    if body not in (None, {}):
        raise ValidationError("body", "this action takes no body")
    return {}


# action name -> (permission, body parser, body optional)
_FOLLOW_UPS: dict[str, tuple[str, BodyParser, bool]] = {
    "correct": ("correct", _parse_correct, False),
    "retract": ("retract", _parse_retract, True),
    "pin": ("pin", _no_body, True),
    "unpin": ("pin", _no_body, True),
    "expiry": ("expiry", _parse_expiry, False),
    "cancel": ("schedule", _no_body, True),
}


def _follow_up(action_name: str) -> Callable[[Request], Any]:
    permission, parse, optional = _FOLLOW_UPS[action_name]

    async def endpoint(request: Request) -> Response:
        desk: Desk = request.app.state.desk
        settings: Settings = request.app.state.settings
        token, line_id, edition = await _line_for(request, permission)
        body, _ = await json_body(request, optional=optional)
        idempotency = _idempotency(request, token, body)
        earlier = await _replay(desk, idempotency)
        if earlier is not None:
            return earlier
        try:
            fields = parse(body, settings)
        except ValidationError as exc:
            raise invalid(exc) from None
        current = await _current_line(request, line_id)
        refusal = _state_error(action_name, current) if current is not None else None
        if refusal is not None:
            raise ApiError(409, "conflict", refusal, field="id")
        if current is not None:
            _check_expiry_change(token, action_name, fields, current)
        at = now_ms()
        action = {
            "action": action_name,
            "id": line_id,
            "edition": edition,
            "at": at,
            "by": _actor(token),
            **fields,
        }
        response: dict[str, Any] = {
            "action": action_name,
            "id": line_id,
            "edition": edition,
            "accepted_at": iso_from_ms(at),
        }
        for name, value in fields.items():
            if name == "changes":
                changes = dict(value)
                if "expires_at_ms" in changes:
                    changes["expires_at"] = iso_from_ms(changes.pop("expires_at_ms"))
                response["changes"] = changes
            elif name == "expires_at_ms":
                response["expires_at"] = iso_from_ms(value)
            else:
                response[name] = value
        return await _submit(request, action, response, idempotency)

    endpoint.__name__ = f"{action_name}_line"
    endpoint.__doc__ = f"POST a {action_name} action for one line."
    return endpoint


async def _line_for(request: Request, permission: str) -> tuple[Token, str, str]:
    """The caller's token, the {line_id} of the path and its edition: 401, 404 or 403 otherwise."""
    desk: Desk = request.app.state.desk
    token = await authenticate(request)
    line_id = str(request.path_params["line_id"])
    edition = await desk.line_edition(line_id) if LINE_ID_RE.match(line_id) else None
    if edition is None:
        raise ApiError(404, "not_found", f"no line {line_id!r}", field="id")
    authorise(token, permission, edition)
    return token, line_id, edition


async def _current_line(request: Request, line_id: str) -> dict[str, Any] | None:
    keys: Keys = request.app.state.keys
    raw = await request.app.state.redis.get(keys.line(line_id))
    return None if raw is None else dict(orjson.loads(raw))


async def _with_reach(request: Request, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each line with the reach of its current version (None before any delivery is counted)."""
    reaches = await read_reach(
        request.app.state.redis, request.app.state.keys, [line["id"] for line in lines]
    )
    out = []
    for line, reach in zip(lines, reaches, strict=True):
        current = reach.get(int(line["version"]))
        out.append({**line, "reach": current.public() if current else None})
    return out


async def live_lines(request: Request) -> Response:
    """GET /api/v1/editions/{edition}/lines: live lines (pinned first, then newest) with their reach."""
    hub: Hub = request.app.state.hub
    token = await authenticate(request)
    edition = edition_param(request)
    authorise(token, "read", edition)
    cursor, lines = await hub.snapshot(edition)
    return JSONResponse({"edition": edition, "cursor": cursor, "lines": await _with_reach(request, lines)})


async def scheduled_lines(request: Request) -> Response:
    """GET /api/v1/editions/{edition}/scheduled: embargoed lines, soonest first."""
    token = await authenticate(request)
    edition = edition_param(request)
    authorise(token, "read", edition)
    redis, keys = request.app.state.redis, request.app.state.keys
    ids = await redis.zrange(keys.scheduled(edition), 0, 199)
    docs = await redis.mget([keys.line(i.decode()) for i in ids]) if ids else []
    lines = [orjson.loads(doc) for doc in docs if doc is not None]
    return JSONResponse(
        {"edition": edition, "lines": [line for line in lines if line["status"] == "withheld"]}
    )


async def get_line(request: Request) -> Response:
    """GET /api/v1/lines/{id}: the line's current state, every version, and reach per version."""
    _, line_id, edition = await _line_for(request, "read")
    redis, keys = request.app.state.redis, request.app.state.keys
    current, history = await redis.get(keys.line(line_id)), await redis.lrange(keys.history(line_id), 0, -1)
    [reach] = await read_reach(redis, keys, [line_id])
    return JSONResponse(
        {
            "id": line_id,
            "edition": edition,
            # None for the few milliseconds between acceptance and fan-out.
            "line": orjson.loads(current) if current else None,
            "history": [orjson.loads(version) for version in history],
            "reach": {str(version): value.public() for version, value in sorted(reach.items())},
        }
    )


async def openapi(request: Request) -> Response:
    """GET /api/v1/openapi.json."""
    settings: Settings = request.app.state.settings
    return JSONResponse(openapi_for(settings.text_max_chars))


routes = [
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/v1/lines", post_line, methods=["POST"]),
    Route("/api/v1/lines/{line_id}", get_line, methods=["GET"]),
    Route("/api/v1/lines/{line_id}/corrections", _follow_up("correct"), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/retraction", _follow_up("retract"), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/pin", _follow_up("pin"), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/unpin", _follow_up("unpin"), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/expiry", _follow_up("expiry"), methods=["POST"]),
    Route("/api/v1/lines/{line_id}/cancellation", _follow_up("cancel"), methods=["POST"]),
    Route("/api/v1/editions/{edition}/lines", live_lines, methods=["GET"]),
    Route("/api/v1/editions/{edition}/scheduled", scheduled_lines, methods=["GET"]),
]
