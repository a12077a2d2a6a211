"""Who am I, what is configured, and token management for admins."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.lines import SHORT_TEXT_CHARS, URGENCY_IPTC
from flashwire.core.settings import Settings
from flashwire.service import audit
from flashwire.service.errors import ApiError
from flashwire.service.http import authenticate, json_body
from flashwire.service.tokens import ALL_EDITIONS, ROLE_ACTIONS, ROLES, Token, TokenStore

EDITION_NAMES = {"en": "English", "ar": "العربية", "es": "Español", "fr": "Français", "de": "Deutsch"}


async def me(request: Request) -> Response:
    """GET /api/v1/me: the presented token's name, role, editions and permitted actions."""
    token = await authenticate(request)
    return JSONResponse({**token.public(), "actions": sorted(ROLE_ACTIONS[token.role])})


async def config(request: Request) -> Response:
    """GET /api/v1/config: editions, topics and limits, for the desk and for clients."""
    settings: Settings = request.app.state.settings
    return JSONResponse(
        {
            "editions": [
                {"code": e, "name": EDITION_NAMES.get(e, e), "direction": settings.direction(e)}
                for e in settings.editions
            ],
            "sections": list(settings.sections),
            "regions": list(settings.regions),
            "urgencies": [{"name": name, "iptc": number} for name, number in URGENCY_IPTC.items()],
            "text_max_chars": settings.text_max_chars,
            "short_text_chars": SHORT_TEXT_CHARS,
            "default_ttl_s": settings.default_ttl_s,
            "heartbeat_s": settings.heartbeat_s,
        }
    )


async def _admin(request: Request) -> Token:
    token = await authenticate(request)
    if "manage-tokens" not in ROLE_ACTIONS.get(token.role, frozenset()):
        raise ApiError(403, "forbidden", "only an admin token may manage tokens")
    return token


def _by(token: Token) -> dict[str, str]:
    return {"token": token.id, "name": token.name, "role": token.role}


def _within(admin: Token, token: Token) -> bool:
    """May this admin see and revoke that token? An admin of `*` any; others only tokens that
    stay within their own editions and are not admins."""
    if ALL_EDITIONS in admin.editions:
        return True
    return token.role != "admin" and all(e in admin.editions for e in token.editions)


async def list_tokens(request: Request) -> Response:
    """GET /api/v1/tokens (admin): the tokens this admin may manage."""
    admin = await _admin(request)
    store: TokenStore = request.app.state.tokens
    return JSONResponse({"tokens": [t.public() for t in await store.list() if _within(admin, t)]})


async def create_token(request: Request) -> Response:
    """POST /api/v1/tokens (admin): {name, role, editions} -> the secret, shown once."""
    admin = await _admin(request)
    settings: Settings = request.app.state.settings
    body, _ = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid", "must be a JSON object", field="body")
    name, role, editions = body.get("name"), body.get("role", "editor"), body.get("editions")
    if not isinstance(name, str) or not name.strip() or len(name) > 80:
        raise ApiError(422, "invalid", "must be a non-empty string of at most 80 characters", field="name")
    if role not in ROLES:
        raise ApiError(422, "invalid", f"must be one of {', '.join(ROLES)}", field="role")
    if not isinstance(editions, list) or not editions:
        raise ApiError(422, "invalid", "must be a non-empty list of editions (or ['*'])", field="editions")
    for index, edition in enumerate(editions):
        if edition != ALL_EDITIONS and edition not in settings.editions:
            raise ApiError(422, "invalid", f"unknown edition {edition!r}", field=f"editions[{index}]")
    # An admin of some editions manages tokens for those editions only, and makes no admins.
    if ALL_EDITIONS not in admin.editions:
        outside = [e for e in editions if e not in admin.editions]
        if outside or role == "admin":
            raise ApiError(
                403, "forbidden", "only an admin of every edition may grant other editions or the admin role"
            )
    store: TokenStore = request.app.state.tokens
    secret, record = await store.create(name=name.strip(), role=role, editions=editions)
    await audit.record(
        request.app.state.redis,
        request.app.state.keys,
        {"at": iso_from_ms(now_ms()), "actor": _by(admin), "action": "token-create", "edition": ALL_EDITIONS,
         "line_id": "", "before": None, "after": record.public()},
    )  # fmt: skip
    return JSONResponse({"token": secret, **record.public()}, status_code=201)


async def revoke_token(request: Request) -> Response:
    """POST /api/v1/tokens/{token_id}/revoke (admin)."""
    admin = await _admin(request)
    store: TokenStore = request.app.state.tokens
    token_id = request.path_params["token_id"]
    before = next((t for t in await store.list() if t.id == token_id and _within(admin, t)), None)
    if before is None or not await store.revoke(token_id):
        raise ApiError(404, "not_found", f"no token {token_id!r}", field="token_id")
    after = next(t for t in await store.list() if t.id == token_id)
    await audit.record(
        request.app.state.redis,
        request.app.state.keys,
        {"at": iso_from_ms(now_ms()), "actor": _by(admin), "action": "token-revoke", "edition": ALL_EDITIONS,
         "line_id": "", "before": before.public(), "after": after.public()},
    )  # fmt: skip
    return JSONResponse(after.public())


routes = [
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/config", config, methods=["GET"]),
    Route("/api/v1/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/tokens", create_token, methods=["POST"]),
    Route("/api/v1/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
]
