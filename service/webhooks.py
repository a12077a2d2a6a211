"""Partner webhooks over HTTP: registering endpoints, and the admin's deliveries and replays.

A partner token (role `partner`, scoped to editions, made by an admin like any token) registers
HTTPS endpoints for its editions, reads and changes its own, rotates their secrets, deletes them
and enables them again once disabled. Admins see and manage every endpoint, and alone list an
endpoint's deliveries and attempts and replay them. The worker delivers (workers/webhooks/);
docs/webhooks.md is the partner's guide, docs/api.md lists the routes.

Every change counts against FLASHWIRE_WEBHOOK_RATE_LIMIT per token (429 with Retry-After over it,
service/rate_limits.py); a partner holds at most FLASHWIRE_WEBHOOK_MAX_ENDPOINTS endpoints; bodies
are bounded by FLASHWIRE_MAX_BODY_BYTES like every request's. An endpoint URL must be https on a
public address, checked against what its name resolves to now (flashwire/core/webhook_urls.py),
unless FLASHWIRE_WEBHOOK_ALLOW_PRIVATE is set (development and tests only).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.cursors import is_cursor
from flashwire.core.lines import ValidationError, validate
from flashwire.core.settings import Settings
from flashwire.core.webhook_models import (
    CreatedEndpoint,
    DeliveryList,
    EndpointList,
    EndpointRecord,
    ReplayAccepted,
    RotatedSecret,
    StoredSecret,
    new_secret,
    webhook_request_models,
)
from flashwire.core.webhook_store import EndpointStore, TooManyEndpoints
from flashwire.core.webhook_urls import EndpointRefused, endpoint_url, resolve
from flashwire.service.errors import ApiError
from flashwire.service.http import authenticate, invalid, json_body, model_response
from flashwire.service.rate_limits import RateLimit, RateLimits
from flashwire.service.tokens import ALL_EDITIONS, ROLE_ACTIONS, Token

DELIVERIES_PAGE_MAX = 100
DELIVERIES_PAGE_DEFAULT = 50


def rate_limit(settings: Settings) -> RateLimit:
    """FLASHWIRE_WEBHOOK_RATE_LIMIT: endpoint changes per token; fails closed like every write."""
    return RateLimit.parse(
        "webhook",
        "webhook endpoint changes by this token",
        "FLASHWIRE_WEBHOOK_RATE_LIMIT",
        settings.webhook_rate_limit,
        fail_open=False,
    )


def _store(request: Request) -> EndpointStore:
    settings: Settings = request.app.state.settings
    return EndpointStore(
        request.app.state.redis, request.app.state.keys, log_retention=settings.webhook_log_retention
    )


def _is_admin(token: Token) -> bool:
    return "manage-webhooks" in ROLE_ACTIONS.get(token.role, frozenset())


async def _caller(request: Request, *, change: bool) -> Token:
    """A partner or admin token, or 401/403; a change is counted against the rate limit."""
    token = await authenticate(request)
    if not _is_admin(token) and "webhooks" not in ROLE_ACTIONS.get(token.role, frozenset()):
        raise ApiError(403, "forbidden", "only a partner or admin token may manage webhook endpoints")
    if change:
        limits: RateLimits = request.app.state.rate_limits
        await limits.hit(request.app.state.webhook_rate_limit, token.id)
    return token


async def _admin(request: Request, *, change: bool) -> Token:
    token = await _caller(request, change=change)
    if not _is_admin(token):
        raise ApiError(403, "forbidden", "only an admin token may list or replay deliveries")
    return token


async def _endpoint(request: Request, token: Token) -> EndpointRecord:
    """The {endpoint_id} of the path, if this token may see it; 404 otherwise (a partner is not told
    that another partner's endpoint exists)."""
    endpoint_id = str(request.path_params["endpoint_id"])
    record = await _store(request).get(endpoint_id)
    if record is None or not (_is_admin(token) or record.owner == token.id):
        raise ApiError(404, "not_found", f"no webhook endpoint {endpoint_id!r}", field="endpoint_id")
    return record


def _check_editions(token: Token, editions: list[str]) -> None:
    if ALL_EDITIONS in token.editions or _is_admin(token):
        return
    outside = [e for e in editions if e not in token.editions]
    if outside:
        raise ApiError(403, "forbidden", f"this token is not for {', '.join(outside)}", field="editions")


async def _checked_url(settings: Settings, url: str) -> str:
    """The URL by the endpoint rule, every address its host resolves to now allowed; 422 otherwise."""
    allow = settings.webhook_allow_private
    try:
        url = endpoint_url(url, allow_private=allow)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await resolve(parts.hostname or "", port, allow_private=allow)
    except EndpointRefused as exc:
        raise ApiError(422, "invalid", str(exc), field="url") from None
    return url


async def register(request: Request) -> Response:
    """POST /api/v1/webhooks: {url, editions, topics?, min_urgency?} -> the endpoint and its secret (once)."""
    token = await _caller(request, change=True)
    settings: Settings = request.app.state.settings
    body, _ = await json_body(request)
    try:
        wanted = validate(webhook_request_models(settings).register, body)
    except ValidationError as exc:
        raise invalid(exc) from None
    _check_editions(token, wanted.editions)
    url = await _checked_url(settings, wanted.url)
    try:
        secret, record = await _store(request).create(
            owner=token.id,
            owner_name=token.name,
            url=url,
            editions=list(dict.fromkeys(wanted.editions)),
            topics=wanted.topics,
            min_urgency=wanted.min_urgency,
            max_per_owner=settings.webhook_max_endpoints,
        )
    except TooManyEndpoints as exc:
        raise ApiError(409, "conflict", f"{exc} (FLASHWIRE_WEBHOOK_MAX_ENDPOINTS)") from None
    return model_response(CreatedEndpoint(**record.view().model_dump(), secret=secret), status_code=201)


async def list_endpoints(request: Request) -> Response:
    """GET /api/v1/webhooks: the caller's endpoints (an admin's: every endpoint), oldest first."""
    token = await _caller(request, change=False)
    found = [e for e in await _store(request).all() if _is_admin(token) or e.owner == token.id]
    return model_response(EndpointList(endpoints=[e.view() for e in found]))


async def read_endpoint(request: Request) -> Response:
    """GET /api/v1/webhooks/{endpoint_id}: status (and why and since when it is disabled), filters."""
    token = await _caller(request, change=False)
    return model_response((await _endpoint(request, token)).view())


async def change_endpoint(request: Request) -> Response:
    """PATCH /api/v1/webhooks/{endpoint_id}: {url?, editions?, topics?, min_urgency?}, each optional."""
    token = await _caller(request, change=True)
    settings: Settings = request.app.state.settings
    record = await _endpoint(request, token)
    body, _ = await json_body(request)
    try:
        wanted = validate(webhook_request_models(settings).update, body)
    except ValidationError as exc:
        raise invalid(exc) from None
    changes = wanted.model_dump(include=wanted.model_fields_set, exclude_none=True)
    if not changes:
        raise ApiError(
            422, "invalid", "send at least one of url, editions, topics, min_urgency", field="body"
        )
    if "editions" in changes:
        _check_editions(token, changes["editions"])
        changes["editions"] = list(dict.fromkeys(changes["editions"]))
    if "url" in changes:
        changes["url"] = await _checked_url(settings, changes["url"])
    at = now_ms()
    changed = await _store(request).change(
        record.id, lambda current: current.model_copy(update={**changes, "updated_at_ms": at})
    )
    if changed is None:
        raise ApiError(404, "not_found", f"no webhook endpoint {record.id!r}", field="endpoint_id")
    return model_response(changed.view())


async def delete_endpoint(request: Request) -> Response:
    """DELETE /api/v1/webhooks/{endpoint_id}: stop sending to it and forget it (204)."""
    token = await _caller(request, change=True)
    record = await _endpoint(request, token)
    await _store(request).delete(record.id)
    return Response(status_code=204)


async def rotate_secret(request: Request) -> Response:
    """POST /api/v1/webhooks/{endpoint_id}/rotate-secret: a new secret (shown once); the current one
    keeps signing beside it for FLASHWIRE_WEBHOOK_SECRET_OVERLAP_S (Standard Webhooks: several
    signatures in one header during a rotation)."""
    token = await _caller(request, change=True)
    settings: Settings = request.app.state.settings
    record = await _endpoint(request, token)
    secret = new_secret()
    at = now_ms()
    until = at + settings.webhook_secret_overlap_s * 1000

    def rotate(current: EndpointRecord) -> EndpointRecord:
        # The current secret becomes the previous one; an older previous one stops now.
        primary = next(s for s in current.secrets if s.until_ms is None)
        kept = [StoredSecret(secret=secret), StoredSecret(secret=primary.secret, until_ms=until)]
        return current.model_copy(update={"secrets": kept, "updated_at_ms": at})

    if await _store(request).change(record.id, rotate) is None:
        raise ApiError(404, "not_found", f"no webhook endpoint {record.id!r}", field="endpoint_id")
    return model_response(
        RotatedSecret(id=record.id, secret=secret, previous_secret_until=iso_from_ms(until))
    )


async def enable_endpoint(request: Request) -> Response:
    """POST /api/v1/webhooks/{endpoint_id}/enable: a disabled endpoint is sent to again, from the
    message after the one that failed (the URL is checked again first)."""
    token = await _caller(request, change=True)
    settings: Settings = request.app.state.settings
    record = await _endpoint(request, token)
    await _checked_url(settings, record.url)
    at = now_ms()

    def enable(current: EndpointRecord) -> EndpointRecord | None:
        if current.status == "active":
            return None
        update = {"status": "active", "disabled_reason": None, "disabled_at_ms": None, "updated_at_ms": at}
        return current.model_copy(update=update)

    store = _store(request)
    changed = await store.change(record.id, enable)
    if changed is None:
        raise ApiError(404, "not_found", f"no webhook endpoint {record.id!r}", field="endpoint_id")
    if record.status == "disabled":
        await store.restart(record.id)
    return model_response(changed.view())


async def list_deliveries(request: Request) -> Response:
    """GET /api/v1/webhooks/{endpoint_id}/deliveries (admin): newest first, each with its attempts."""
    token = await _admin(request, change=False)
    record = await _endpoint(request, token)
    before = request.query_params.get("before") or None
    if before is not None and not is_cursor(before):
        raise ApiError(422, "invalid", "must be a delivery id such as 1795625033949-0", field="before")
    raw_limit = request.query_params.get("limit") or str(DELIVERIES_PAGE_DEFAULT)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= DELIVERIES_PAGE_MAX:
        raise ApiError(
            422, "invalid", f"must be a whole number from 1 to {DELIVERIES_PAGE_MAX}", field="limit"
        )
    found, next_before = await _store(request).deliveries(record.id, before=before, limit=int(raw_limit))
    return model_response(DeliveryList(endpoint_id=record.id, deliveries=found, next_before=next_before))


async def replay(request: Request) -> Response:
    """POST /api/v1/webhooks/{endpoint_id}/replay (admin): {delivery_id} or {since}: the delivery, or
    every delivery recorded since then, sent again after what is queued, each with its webhook-id."""
    token = await _admin(request, change=True)
    settings: Settings = request.app.state.settings
    record = await _endpoint(request, token)
    body, _ = await json_body(request)
    try:
        wanted = validate(webhook_request_models(settings).replay, body)
    except ValidationError as exc:
        raise invalid(exc) from None
    if (wanted.delivery_id is None) == (wanted.since is None):
        raise ApiError(422, "invalid", "send exactly one of delivery_id and since", field="body")
    store = _store(request)
    if wanted.delivery_id is not None:
        if not is_cursor(wanted.delivery_id):
            raise ApiError(422, "invalid", "must be a delivery id", field="delivery_id")
        ids = [wanted.delivery_id]
    else:
        assert wanted.since is not None
        ids = await store.entries_since(record.id, wanted.since)
    added = await store.replay(record.id, ids)
    if wanted.delivery_id is not None and not added:
        raise ApiError(404, "not_found", f"no delivery {wanted.delivery_id!r}", field="delivery_id")
    return model_response(ReplayAccepted(endpoint_id=record.id, replayed=added), status_code=201)


routes = [
    Route("/api/v1/webhooks", register, methods=["POST"]),
    Route("/api/v1/webhooks", list_endpoints, methods=["GET"]),
    Route("/api/v1/webhooks/{endpoint_id}", read_endpoint, methods=["GET"]),
    Route("/api/v1/webhooks/{endpoint_id}", change_endpoint, methods=["PATCH"]),
    Route("/api/v1/webhooks/{endpoint_id}", delete_endpoint, methods=["DELETE"]),
    Route("/api/v1/webhooks/{endpoint_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/api/v1/webhooks/{endpoint_id}/enable", enable_endpoint, methods=["POST"]),
    Route("/api/v1/webhooks/{endpoint_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/api/v1/webhooks/{endpoint_id}/replay", replay, methods=["POST"]),
]
