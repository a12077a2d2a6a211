"""Push registrations under /api/v1/push: apps and pages register a device or a browser.

Anonymous, as readers are: no token. What protects it instead:

- a registration is read, changed or deleted only with the secret returned when it was made
  (`Authorization: Bearer <secret>`); an unknown id and a wrong secret get the same 404, and
  every failure counts against the client address like a failed login (service/http.py);
- registrations are rate-limited per client address (FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT)
  and bounded in number per address (FLASHWIRE_PUSH_MAX_REGISTRATIONS_PER_CLIENT: 429);
- a Web Push endpoint must be on a browser push service's host (FLASHWIRE_WEBPUSH_HOSTS), since
  the worker POSTs to it.

Pages on partner sites call these across origins: the answers carry the CORS headers of an
allowed origin (FLASHWIRE_ALLOWED_ORIGINS) and OPTIONS answers the preflight.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.lines import ValidationError
from flashwire.core.push_models import (
    PushConfig,
    QuietHours,
    RegistrationCreated,
    RegistrationView,
    parse_registration,
    parse_update,
)
from flashwire.core.push_registry import PushRegistry, RegistrationLimit
from flashwire.core.settings import Settings
from flashwire.core.vapid import vapid_public_key
from flashwire.service.errors import ApiError
from flashwire.service.http import invalid, json_body, model_response
from flashwire.service.origins import OriginPolicy
from flashwire.service.rate_limits import RateLimits, client_address

SECRET_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="flashwire push registration"'}
PREFLIGHT_MAX_AGE_S = "600"


@functools.lru_cache(maxsize=4)
def _vapid_public_key(path: str) -> str:
    return vapid_public_key(Path(path).read_text())


def _cors(request: Request) -> dict[str, str]:
    origins: OriginPolicy = request.app.state.origins
    return origins.cors_headers(request)


def _registry(request: Request) -> PushRegistry:
    registry: PushRegistry = request.app.state.push_registry
    return registry


def _view(record: dict[str, Any]) -> dict[str, Any]:
    quiet = record.get("quiet_hours")
    return {
        "id": record["id"],
        "platform": record["platform"],
        "environment": record["environment"] if record["platform"] == "apns" else None,
        "editions": record["editions"],
        "topics": record["topics"],
        "urgency": record["urgency"],
        "language": record["language"],
        "quiet_hours": QuietHours(**quiet) if quiet else None,
        "registered_at": iso_from_ms(record["registered_at_ms"]),
    }


async def push_config(request: Request) -> Response:
    """GET /api/v1/push: the platforms on, the VAPID public key, the editions and topics."""
    settings: Settings = request.app.state.settings
    key = _vapid_public_key(settings.vapid_private_key_file) if "webpush" in settings.push_platforms else None
    config = PushConfig(
        platforms=list(settings.push_platforms),  # type: ignore[arg-type]
        vapid_public_key=key,
        editions=list(settings.editions),
        topics=list(settings.topics),
    )
    return model_response(config, headers={"Cache-Control": "max-age=300", **_cors(request)})


async def register(request: Request) -> Response:
    """POST /api/v1/push/registrations: 201 with the registration and its secret (200 when the same
    target registered again). 422 naming the field, 429 over the rate or the number per address."""
    settings: Settings = request.app.state.settings
    limits: RateLimits = request.app.state.rate_limits
    address = client_address(request)
    await limits.hit(limits.push_registrations, address)
    body, _ = await json_body(request)
    try:
        parsed = parse_registration(body, settings)
    except ValidationError as exc:
        raise invalid(exc) from None
    try:
        stored, secret = await _registry(request).register(
            parsed,
            client=address,
            now_ms=now_ms(),
            max_per_client=settings.push_max_registrations_per_client,
        )
    except RegistrationLimit:
        raise ApiError(
            429,
            "registration_limit",
            f"this address holds {settings.push_max_registrations_per_client} push registrations already"
            " (FLASHWIRE_PUSH_MAX_REGISTRATIONS_PER_CLIENT); delete one first",
        ) from None
    created = RegistrationCreated(**_view(stored.record), secret=secret)
    headers = {"Location": f"/api/v1/push/registrations/{stored.record['id']}", **_cors(request)}
    return model_response(created, status_code=201 if stored.created else 200, headers=headers)


async def _owned(request: Request) -> dict[str, Any]:
    """The registration of the path, if the request's Bearer secret is its secret: else 401
    (no secret) or 404 (unknown id or wrong secret: the same answer, so ids cannot be probed)."""
    limits: RateLimits = request.app.state.rate_limits
    address = client_address(request)
    header = request.headers.get("authorization", "")
    if header.strip():
        await limits.check(limits.auth_failures, address)
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        if header.strip():
            await limits.hit(limits.auth_failures, address)
        raise ApiError(
            401,
            "unauthorized",
            "the registration's secret is required: Authorization: Bearer <secret>",
            field="Authorization",
            headers={**SECRET_CHALLENGE, **_cors(request)},
        )
    record = await _registry(request).authorised(str(request.path_params["registration_id"]), secret.strip())
    if record is None:
        await limits.hit(limits.auth_failures, address)
        raise ApiError(
            404, "not_found", "no such registration, or not with this secret", headers=_cors(request)
        )
    return record


async def read_registration(request: Request) -> Response:
    """GET /api/v1/push/registrations/{id} (Bearer secret): the registration, without its secret."""
    record = await _owned(request)
    return model_response(
        RegistrationView(**_view(record)), headers={"Cache-Control": "no-store", **_cors(request)}
    )


async def update_registration(request: Request) -> Response:
    """PUT /api/v1/push/registrations/{id} (Bearer secret): replace the reader's choices."""
    settings: Settings = request.app.state.settings
    record = await _owned(request)
    body, _ = await json_body(request)
    try:
        choices = parse_update(body, settings)
    except ValidationError as exc:
        raise invalid(exc) from None
    updated = await _registry(request).update(record, choices)
    return model_response(RegistrationView(**_view(updated)), headers=_cors(request))


async def delete_registration(request: Request) -> Response:
    """DELETE /api/v1/push/registrations/{id} (Bearer secret): 204; nothing more is pushed to it."""
    record = await _owned(request)
    await _registry(request).remove(record["id"])
    return Response(status_code=204, headers=_cors(request))


def _preflight(methods: str) -> Any:
    async def preflight(request: Request) -> Response:
        """CORS preflight (Fetch standard, "CORS protocol") for an allowed origin."""
        headers = _cors(request)
        if headers:
            headers |= {
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
            }
        return Response(status_code=204, headers=headers)

    return preflight


routes = [
    Route("/api/v1/push", push_config, methods=["GET"]),
    Route("/api/v1/push/registrations", register, methods=["POST"]),
    Route("/api/v1/push/registrations", _preflight("POST"), methods=["OPTIONS"]),
    Route("/api/v1/push/registrations/{registration_id}", read_registration, methods=["GET"]),
    Route("/api/v1/push/registrations/{registration_id}", update_registration, methods=["PUT"]),
    Route("/api/v1/push/registrations/{registration_id}", delete_registration, methods=["DELETE"]),
    Route(
        "/api/v1/push/registrations/{registration_id}", _preflight("GET, PUT, DELETE"), methods=["OPTIONS"]
    ),
]
