"""Who am I, what is configured, and token management for admins."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashwire.core.clock import now_ms
from flashwire.core.editions import edition_name
from flashwire.core.lines import SHORT_TEXT_CHARS, ValidationError, validate
from flashwire.core.models import (
    RETRACT_REASON_MAX_CHARS,
    SOURCE_MAX_CHARS,
    URGENCY_IPTC,
    Actor,
    Config,
    CreatedToken,
    EditionInfo,
    Me,
    TokenList,
    TokenRecord,
    UrgencyInfo,
    request_models,
)
from flashwire.core.settings import Settings
from flashwire.core.text import URL_MAX_CHARS
from flashwire.core.topics import topic_names
from flashwire.core.webhook_store import EndpointStore
from flashwire.service import audit
from flashwire.service.errors import ApiError
from flashwire.service.http import authenticate, invalid, json_body, model_response
from flashwire.service.rate_limits import RateLimits
from flashwire.service.tokens import ALL_EDITIONS, ROLE_ACTIONS, Token, TokenStore


async def me(request: Request) -> Response:
    """GET /api/v1/me: the presented token's name, role, editions and permitted actions."""
    token = await authenticate(request)
    record = token.record()
    return model_response(Me(**record.model_dump(), actions=sorted(ROLE_ACTIONS[token.role])))


async def config(request: Request) -> Response:
    """GET /api/v1/config: editions, topics (slugs, and each one's name per desk language from
    flashwire/core/topics.py) and limits, for the desk and for clients (the desk sizes its inputs
    from these limits and labels its topics with these names, web/desk/desk.js)."""
    settings: Settings = request.app.state.settings
    body = Config(
        editions=[
            EditionInfo.model_validate(
                {"code": e, "name": edition_name(e).name, "direction": settings.direction(e)}
            )
            for e in settings.editions
        ],
        sections=list(settings.sections),
        regions=list(settings.regions),
        topic_names={slug: topic_names(slug) for slug in settings.topics},
        urgencies=[UrgencyInfo.model_validate({"name": n, "iptc": i}) for n, i in URGENCY_IPTC.items()],
        text_max_chars=settings.text_max_chars,
        short_text_chars=SHORT_TEXT_CHARS,
        source_max_chars=SOURCE_MAX_CHARS,
        reason_max_chars=RETRACT_REASON_MAX_CHARS,
        url_max_chars=URL_MAX_CHARS,
        default_ttl_s=settings.default_ttl_s,
        heartbeat_s=settings.heartbeat_s,
    )
    return model_response(body)


async def _admin(request: Request) -> Token:
    token = await authenticate(request)
    if "manage-tokens" not in ROLE_ACTIONS.get(token.role, frozenset()):
        raise ApiError(403, "forbidden", "only an admin token may manage tokens")
    return token


async def _count_admin_action(request: Request, admin: Token) -> None:
    """Count one token creation or revocation by this admin against FLASHWIRE_ADMIN_RATE_LIMIT,
    shared by every node: 429 with Retry-After over it (service/rate_limits.py)."""
    limits: RateLimits = request.app.state.rate_limits
    await limits.hit(limits.admin_actions, admin.id)


def _by(token: Token) -> Actor:
    return Actor(token=token.id, name=token.name, role=token.role)


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
    return model_response(TokenList(tokens=[t.record() for t in await store.list() if _within(admin, t)]))


async def create_token(request: Request) -> Response:
    """POST /api/v1/tokens (admin): {name, role, editions} -> the secret, shown once."""
    admin = await _admin(request)
    await _count_admin_action(request, admin)
    settings: Settings = request.app.state.settings
    body, _ = await json_body(request)
    try:
        wanted = validate(request_models(settings).create_token, body)
    except ValidationError as exc:
        raise invalid(exc) from None
    # An admin of some editions manages tokens for those editions only, and makes no admins.
    if ALL_EDITIONS not in admin.editions:
        outside = [e for e in wanted.editions if e not in admin.editions]
        if outside or wanted.role == "admin":
            raise ApiError(
                403, "forbidden", "only an admin of every edition may grant other editions or the admin role"
            )
    store: TokenStore = request.app.state.tokens
    secret, token = await store.create(name=wanted.name, role=wanted.role, editions=wanted.editions)
    await _audit(request, admin, "token-create", None, token.record())
    return model_response(CreatedToken(token=secret, **token.record().model_dump()), status_code=201)


async def _audit(
    request: Request, admin: Token, action: str, before: TokenRecord | None, after: TokenRecord
) -> None:
    entry = audit.token_change(_by(admin), action, before, after)
    await audit.record(request.app.state.redis, request.app.state.keys, entry)


async def revoke_token(request: Request) -> Response:
    """POST /api/v1/tokens/{token_id}/revoke (admin)."""
    admin = await _admin(request)
    await _count_admin_action(request, admin)
    store: TokenStore = request.app.state.tokens
    token_id = request.path_params["token_id"]
    before = next((t for t in await store.list() if t.id == token_id and _within(admin, t)), None)
    if before is None or not await store.revoke(token_id):
        raise ApiError(404, "not_found", f"no token {token_id!r}", field="token_id")
    after = next(t for t in await store.list() if t.id == token_id)
    await _audit(request, admin, "token-revoke", before.record(), after.record())
    # A partner's webhooks stop with its token (docs/webhooks.md, "Disabled endpoints").
    webhooks = EndpointStore(request.app.state.redis, request.app.state.keys)
    await webhooks.disable_owned_by(token_id, "its partner token was revoked", now_ms())
    return model_response(after.record())


routes = [
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/config", config, methods=["GET"]),
    Route("/api/v1/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/tokens", create_token, methods=["POST"]),
    Route("/api/v1/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
]
