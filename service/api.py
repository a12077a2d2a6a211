"""The newsroom API under /api/v1: post, correct and retract lines; read them back.

Every write is authorised against the token's role and editions, validated
field by field, and answered 201 only once the action is in the desk stream.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.clock import iso_from_ms, now_ms
from service.desk import Desk, IdempotencyConflict, UnknownLine
from service.errors import ApiError
from service.hub import Hub
from service.lines import ValidationError, parse_correction, parse_post, parse_retraction
from service.openapi import OPENAPI
from service.settings import Settings
from service.tokens import Token, TokenStore

_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
_LINE_ID_RE = re.compile(r"^[a-z0-9-]{1,64}$")


def _state(request: Request) -> tuple[Settings, Desk, TokenStore, Hub]:
    state = request.app.state
    return state.settings, state.desk, state.tokens, state.hub


async def _authenticate(request: Request) -> Token:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="flashwire"'}
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401,
            "unauthorized",
            "an editor token is required: Authorization: Bearer <token>",
            field="Authorization",
            headers=challenge,
        )
    tokens: TokenStore = request.app.state.tokens
    token = await tokens.authenticate(presented.strip())
    if token is None:
        raise ApiError(
            401, "unauthorized", "the token is unknown or revoked", field="Authorization", headers=challenge
        )
    return token


def _authorise(token: Token, action: str, edition: str) -> None:
    if not token.may(action, edition):
        raise ApiError(
            403,
            "forbidden",
            f"a {token.role} token for {', '.join(token.editions)} may not {action} in {edition!r}",
        )


async def _json_body(request: Request, *, optional: bool = False) -> tuple[Any, bytes]:
    settings: Settings = request.app.state.settings
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise ApiError(413, "too_large", f"the body exceeds {settings.max_body_bytes} bytes", field="body")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > settings.max_body_bytes:
            raise ApiError(
                413, "too_large", f"the body exceeds {settings.max_body_bytes} bytes", field="body"
            )
    if not raw.strip():
        if optional:
            return None, raw
        raise ApiError(422, "invalid", "a JSON body is required", field="body")
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid", f"the body is not valid JSON ({exc.msg})", field="body") from None


def _idempotency(request: Request, token: Token, raw: bytes) -> tuple[str, str, str] | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY_RE.match(key):
        raise ApiError(422, "invalid", "must be 1-200 printable ASCII characters", field="Idempotency-Key")
    fingerprint = hashlib.sha256(
        request.method.encode() + request.url.path.encode() + b"\n" + raw
    ).hexdigest()
    return token.id, key, fingerprint


def _invalid(exc: ValidationError) -> ApiError:
    return ApiError(422, "invalid", exc.message, field=exc.field)


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


async def post_line(request: Request) -> Response:
    """POST /api/v1/lines: publish a new line."""
    settings, _, _, _ = _state(request)
    token = await _authenticate(request)
    body, raw = await _json_body(request)
    edition = body.get("edition") if isinstance(body, dict) else None
    if isinstance(edition, str) and edition in settings.editions:
        _authorise(token, "post", edition)
    try:
        post = parse_post(body, settings)
    except ValidationError as exc:
        raise _invalid(exc) from None
    _authorise(token, "post", post.edition)
    line_id = f"{post.edition}-{secrets.token_hex(8)}"
    at = now_ms()
    line = {
        "text": post.text,
        "urgency": post.urgency,
        "topics": list(post.topics),
        "url": post.url,
        "expires_at_ms": post.expires_at_ms,
    }
    action = {
        "action": "post",
        "id": line_id,
        "edition": post.edition,
        "at": at,
        "by": {"token": token.id, "name": token.name},
        "line": line,
    }
    preview = {k: v for k, v in line.items() if k != "expires_at_ms"}
    preview["expires_at"] = iso_from_ms(post.expires_at_ms)
    response = {
        "action": "post",
        "id": line_id,
        "edition": post.edition,
        "accepted_at": iso_from_ms(at),
        "line": {"id": line_id, "edition": post.edition, **preview},
    }
    return await _submit(
        request, action, response, _idempotency(request, token, raw), location="/api/v1/lines/{id}"
    )


async def _follow_up(request: Request, action_name: str) -> tuple[Token, str, str, Any, bytes]:
    """Common part of correct / retract: who, which line, which edition, the body."""
    _, desk, _, _ = _state(request)
    token = await _authenticate(request)
    line_id = request.path_params["line_id"]
    edition = await desk.line_edition(line_id) if _LINE_ID_RE.match(line_id) else None
    if edition is None:
        raise ApiError(404, "not_found", f"no line {line_id!r}", field="id")
    _authorise(token, action_name, edition)
    body, raw = await _json_body(request, optional=action_name == "retract")
    return token, line_id, edition, body, raw


async def correct_line(request: Request) -> Response:
    """POST /api/v1/lines/{id}/corrections: a new version of the line."""
    settings = request.app.state.settings
    token, line_id, edition, body, raw = await _follow_up(request, "correct")
    try:
        correction = parse_correction(body, settings)
    except ValidationError as exc:
        raise _invalid(exc) from None
    at = now_ms()
    action = {
        "action": "correct",
        "id": line_id,
        "edition": edition,
        "at": at,
        "by": {"token": token.id, "name": token.name},
        "changes": correction.changes,
    }
    changes = dict(correction.changes)
    if "expires_at_ms" in changes:
        changes["expires_at"] = iso_from_ms(changes.pop("expires_at_ms"))
    response = {
        "action": "correct",
        "id": line_id,
        "edition": edition,
        "accepted_at": iso_from_ms(at),
        "changes": changes,
    }
    return await _submit(request, action, response, _idempotency(request, token, raw))


async def retract_line(request: Request) -> Response:
    """POST /api/v1/lines/{id}/retraction: kill the line everywhere."""
    token, line_id, edition, body, raw = await _follow_up(request, "retract")
    try:
        reason = parse_retraction(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    at = now_ms()
    action = {
        "action": "retract",
        "id": line_id,
        "edition": edition,
        "at": at,
        "by": {"token": token.id, "name": token.name},
        "reason": reason,
    }
    response = {
        "action": "retract",
        "id": line_id,
        "edition": edition,
        "accepted_at": iso_from_ms(at),
        "reason": reason,
    }
    return await _submit(request, action, response, _idempotency(request, token, raw))


async def live_lines(request: Request) -> Response:
    """GET /api/v1/editions/{edition}/lines: the edition's live lines, newest first."""
    settings, _, _, hub = _state(request)
    token = await _authenticate(request)
    edition = request.path_params["edition"]
    if edition not in settings.editions:
        raise ApiError(404, "not_found", f"no edition {edition!r}", field="edition")
    if "*" not in token.editions and edition not in token.editions:
        raise ApiError(403, "forbidden", f"this token has no access to {edition!r}")
    cursor, lines = await hub.snapshot(edition)
    return JSONResponse({"edition": edition, "cursor": cursor, "lines": lines})


async def get_line(request: Request) -> Response:
    """GET /api/v1/lines/{id}: the line's current state and every version."""
    _, desk, _, _ = _state(request)
    token = await _authenticate(request)
    line_id = request.path_params["line_id"]
    edition = await desk.line_edition(line_id) if _LINE_ID_RE.match(line_id) else None
    if edition is None:
        raise ApiError(404, "not_found", f"no line {line_id!r}", field="id")
    if "*" not in token.editions and edition not in token.editions:
        raise ApiError(403, "forbidden", f"this token has no access to {edition!r}")
    redis = request.app.state.redis
    keys = request.app.state.keys
    current, history = await redis.get(keys.line(line_id)), await redis.lrange(keys.history(line_id), 0, -1)
    return JSONResponse(
        {
            "id": line_id,
            "edition": edition,
            # None for the few milliseconds between acceptance and fan-out.
            "line": orjson.loads(current) if current else None,
            "history": [orjson.loads(version) for version in history],
        }
    )


async def openapi(request: Request) -> Response:
    """GET /api/v1/openapi.json."""
    return JSONResponse(OPENAPI)


routes = [
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/v1/lines", post_line, methods=["POST"]),
    Route("/api/v1/lines/{line_id}", get_line, methods=["GET"]),
    Route("/api/v1/lines/{line_id}/corrections", correct_line, methods=["POST"]),
    Route("/api/v1/lines/{line_id}/retraction", retract_line, methods=["POST"]),
    Route("/api/v1/editions/{edition}/lines", live_lines, methods=["GET"]),
]
