"""Request helpers shared by the API modules: authentication, authorisation, JSON bodies, typed
responses."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from flashwire.core.lines import ValidationError
from flashwire.core.settings import Settings
from flashwire.service.errors import ApiError
from flashwire.service.rate_limits import RateLimits, client_address
from flashwire.service.tokens import Token, TokenStore, token_id

LINE_ID_RE = re.compile(r"^[a-z0-9-]{1,64}$")
A = TypeVar("A")
B = TypeVar("B")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="flashwire"'}


async def authenticate(request: Request) -> Token:
    """The token presented as `Authorization: Bearer …`, or 401.

    A request that carries credentials (any non-blank `Authorization`) from a client address over
    FLASHWIRE_AUTH_FAILURE_RATE_LIMIT is answered 429 with Retry-After whatever its token (the token
    is looked up in the same round trip as the check, and its answer is not used), and a
    credential that fails (malformed, unknown, revoked, not Bearer) counts against that address
    (service/rate_limits.py). A request with no credentials is neither refused nor counted.
    """
    header = request.headers.get("authorization", "")
    limits: RateLimits = request.app.state.rate_limits
    address = client_address(request)
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        if header.strip():
            await limits.check(limits.auth_failures, address)
            await limits.hit(limits.auth_failures, address)
        raise ApiError(
            401,
            "unauthorized",
            "an editor token is required: Authorization: Bearer <token>",
            field="Authorization",
            headers=_CHALLENGE,
        )
    tokens: TokenStore = request.app.state.tokens
    # The address's check and the token's lookup go to Redis together, one round trip instead of
    # two (issue 14): the lookup only reads, and its answer is used only once the check has let
    # the request through, so a refused request is told 429 exactly as if it had not been made.
    _, looked_up = await together(
        limits.check(limits.auth_failures, address), tokens.authenticate(presented.strip())
    )
    if looked_up is None:
        await limits.hit(limits.auth_failures, address)
        raise ApiError(
            401, "unauthorized", "the token is unknown or revoked", field="Authorization", headers=_CHALLENGE
        )
    return looked_up


async def together(first: Awaitable[A], second: Coroutine[Any, Any, B]) -> tuple[A, B]:
    """Both answers, their Redis commands sent at once (one round trip, not two); an error of
    `first` is raised before one of `second`, as if `first` had been awaited alone first. For
    reads only whose answer waits on `first`'s (a line looked up beside the token that may see it).

    `second` runs as a task started before `first` is awaited here (one task, not gather's two:
    on loopback a round trip costs about as much as a task does)."""
    started = asyncio.ensure_future(second)
    try:
        one = await first
    except BaseException:
        if not started.done():
            await asyncio.wait([started])
        if not started.cancelled():
            started.exception()  # retrieved: the first error is the one that counts
        raise
    return one, await started


def presented_token_id(request: Request) -> str | None:
    """The id of the bearer token the request presents, unchecked (None without one): what a
    lookup sent beside the token's own (`together`) may be keyed by."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return token_id(presented.strip()) if scheme.lower() == "bearer" else None


def authorise(token: Token, action: str, edition: str) -> None:
    """403 unless the token's role allows `action` on `edition`."""
    if not token.may(action, edition):
        raise ApiError(
            403,
            "forbidden",
            f"{'an' if token.role[0] in 'aeiou' else 'a'} {token.role} token for {', '.join(token.editions)}"
            f" may not {action} in {edition!r}",
        )


BODY_READ = "flashwire.body"


async def json_body(request: Request, *, optional: bool = False) -> tuple[Any, bytes]:
    """The parsed JSON body and its raw bytes; 413 beyond the size limit, 422 if malformed."""
    settings: Settings = request.app.state.settings
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise ApiError(413, "too_large", f"the body exceeds {settings.max_body_bytes} bytes", field="body")
    # Kept in the request's scope: a desk write run again through a failover (service/write_retry.py)
    # reads the body it already received.
    raw: bytes = request.scope.get(BODY_READ, b"")
    if BODY_READ not in request.scope:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > settings.max_body_bytes:
                raise ApiError(
                    413, "too_large", f"the body exceeds {settings.max_body_bytes} bytes", field="body"
                )
        request.scope[BODY_READ] = raw
    if not raw.strip():
        if optional:
            return None, raw
        raise ApiError(422, "invalid", "a JSON body is required", field="body")
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid", f"the body is not valid JSON ({exc.msg})", field="body") from None


def model_response(
    body: BaseModel, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A response model serialised once by pydantic (the shape the OpenAPI document publishes)."""
    return Response(
        body.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json"
    )


def invalid(exc: ValidationError) -> ApiError:
    """A 422 naming the field of a validation error."""
    return ApiError(422, "invalid", exc.message, field=exc.field)


def edition_param(request: Request) -> str:
    """The {edition} path parameter, or 404."""
    settings: Settings = request.app.state.settings
    edition = str(request.path_params["edition"])
    if edition not in settings.editions:
        raise ApiError(404, "not_found", f"no edition {edition!r}", field="edition")
    return edition
