"""A local FCM HTTP v1 service: `messages:send` and the OAuth2 token endpoint it trusts.

    python -m tests.push_services.fcm --port P --control-port C --state-dir D [--token-lifetime-s N]

On start it generates a service account (an RSA key pair) and writes, into the state dir:

- `service-account.json`: a key file in the shape Google issues (type, project_id,
  private_key_id, private_key, client_email, client_id, token_uri, ...), its `token_uri`
  pointing at this service, so google-auth fetches access tokens here;
- `ca.pem`: the test CA (trustme) that signed this service's TLS certificate for 127.0.0.1.

The service port speaks HTTPS with ALPN `h2` and `http/1.1` (hypercorn), as fcm.googleapis.com
and oauth2.googleapis.com do:

- `POST /token`: the RFC 7523 §2.1 JWT bearer grant (`grant_type=urn:ietf:params:oauth:
  grant-type:jwt-bearer`, `assertion=<JWT>`). The assertion must be signed RS256 with the service
  account's key (header `kid` = private_key_id), `iss` = client_email, `aud` = this token URL or
  Google's (google-auth always sends Google's), `scope` naming
  https://www.googleapis.com/auth/firebase.messaging, `exp` after now and at most one hour after
  `iat` (Google's rule). Answers {access_token, expires_in, token_type: "Bearer"};
  otherwise 400 {"error": "invalid_grant" | "invalid_scope" | "unsupported_grant_type",
  "error_description"} (RFC 6749 §5.2).
- `POST /v1/projects/{project_id}/messages:send` {"message": {...}}: needs a bearer token this
  service issued and that has not expired (else 401 UNAUTHENTICATED), the key file's project id
  (else 403 PERMISSION_DENIED), and a message the real API would take (else 400 INVALID_ARGUMENT):
  `token` present; `data` a map of strings to strings without reserved keys (`from`,
  `message_type`, `google.*`, `gcm.*`); `android.ttl` "<seconds>s" within 0-2,419,200 s;
  `android.collapse_key` present (Flashwire's own rule: every alert collapses); `android.priority`
  HIGH or NORMAL; `apns.headers` and `webpush.headers` values strings, `apns-priority` 5 or 10;
  the payload (UTF-8 bytes of data keys and values plus notification title and body) at most
  4,096 bytes. A well-formed token this service never issued is 404 UNREGISTERED; a malformed
  one (no ":APA91b") 400 INVALID_ARGUMENT. Error bodies are the v1 shape: {"error": {"code",
  "message", "status", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
  "errorCode"}]}}. Success: 200 {"name": "projects/<id>/messages/<n>"}.

The control port (plain HTTP/1.1) implements the shared control API of tests/push_services/
__init__.py; `received` entries carry `collapse` = android.collapse_key, `payload` = the message's
`data` (strings, as the app gets them), `headers` = the request's HTTP headers without
`authorization`, and `message` = the whole v1 message. Fault modes beyond the shared three
(`gone` → 404 UNREGISTERED, `throttle` → 429 QUOTA_EXCEEDED with Retry-After, `error` → 500
INTERNAL):

- `unavailable`: the next send to each token answers 503 UNAVAILABLE with Retry-After;
- `mismatch`: every later send answers 403 SENDER_ID_MISMATCH;
- `hang`: the next send to each token is never answered (the client's timeout ends it).

And two routes of its own: `GET /_control/stats` → {"tokens_issued", "token_requests", "sends"}
(access tokens issued so far, token requests and send requests seen), and `POST /_control/revoke`
forgets every access token issued so far, so the next send with one is answered 401 (an expired or
revoked token).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import signal
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import trustme
import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
# google-auth puts Google's token URL in `aud` whatever the key file's token_uri says
# (google/oauth2/service_account.py, _make_authorization_grant_assertion), so both are taken.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PROJECT_ID = "flashwire-test"
ASSERTION_MAX_LIFETIME_S = 3_600
TTL_MAX_S = 2_419_200
PAYLOAD_MAX_BYTES = 4_096
RESERVED_DATA_KEYS = frozenset({"from", "message_type", "collapse_key", "notification"})
TTL_FORMAT = re.compile(r"^(\d+)(\.\d{1,9})?s$")
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
HANG_S = 3_600.0
# The status each FCM error code comes with (FCM v1 ErrorCode reference).
ERROR_STATUS = {
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "UNREGISTERED": (404, "NOT_FOUND"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def v1_error(
    status: int, rpc_status: str, message: str, error_code: str | None, headers: dict[str, str] | None = None
) -> Response:
    """An FCM v1 error answer (google.rpc.Status, with an FcmError detail when there is a code)."""
    details = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}] if error_code else []
    body = {"error": {"code": status, "message": message, "status": rpc_status, "details": details}}
    return _json(body, status, headers)


def fcm_error(error_code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    status, rpc_status = ERROR_STATUS[error_code]
    return v1_error(status, rpc_status, message, error_code, headers)


def message_problem(message: Any) -> str | None:
    """Why the real API would answer 400 INVALID_ARGUMENT to this message, or None if it is fine."""
    if not isinstance(message, dict):
        return "message must be an object"
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "message.token is required"
    size = 0
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "message.data must be a map"
    for key, value in data.items():
        if not isinstance(value, str):
            return f"Invalid value at 'message.data[{key}].value' (TYPE_STRING)"
        if key in RESERVED_DATA_KEYS or key.startswith(("google.", "gcm.")):
            return f"Invalid data payload key: {key}"
        size += len(key.encode()) + len(value.encode())
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or not all(isinstance(v, str) for v in notification.values()):
        return "message.notification must be a map of strings"
    size += sum(len(str(notification.get(k, "")).encode()) for k in ("title", "body"))
    if size > PAYLOAD_MAX_BYTES:
        return f"Message is too big: {size} bytes of payload, at most {PAYLOAD_MAX_BYTES}"
    return _android_problem(message.get("android")) or _headers_problem(message)


def _android_problem(android: Any) -> str | None:
    if not isinstance(android, dict):
        return "message.android is required (collapse_key, ttl)"
    ttl = android.get("ttl")
    match = TTL_FORMAT.match(ttl) if isinstance(ttl, str) else None
    if match is None:
        return (
            f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration): {ttl!r}"
        )
    if not 0 <= int(match.group(1)) <= TTL_MAX_S:
        return f"message.android.ttl must be within 0 and {TTL_MAX_S} seconds"
    if not isinstance(android.get("collapse_key"), str) or not android["collapse_key"]:
        return "message.android.collapse_key is required"
    if android.get("priority", "NORMAL") not in ("HIGH", "NORMAL"):
        return f"Invalid value at 'message.android.priority': {android.get('priority')!r}"
    return None


def _headers_problem(message: dict[str, Any]) -> str | None:
    for block in ("apns", "webpush"):
        headers = message.get(block, {}).get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            return f"message.{block}.headers must be a map of strings"
    apns_priority = message.get("apns", {}).get("headers", {}).get("apns-priority", "10")
    if apns_priority not in ("5", "10"):
        return f"Invalid apns-priority: {apns_priority!r}"
    return None


@dataclass
class FcmState:
    """Everything the service keeps, in memory: the service account, tokens, faults, messages."""

    token_url: str
    public_key: Any
    private_key_id: str
    client_email: str
    token_lifetime_s: int
    access_tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    token_requests: int = 0
    sends: int = 0
    targets: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    mismatch: set[str] = field(default_factory=set)
    # token → (mode, retry_after_s) for the one-shot faults: throttle, unavailable, error, hang.
    once: dict[str, tuple[str, float]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)


def service_app(state: FcmState) -> Starlette:
    """The HTTPS side: the token endpoint and messages:send."""

    async def token(request: Request) -> Response:
        state.token_requests += 1
        form = {k: v[0] for k, v in urllib.parse.parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _json({"error": "unsupported_grant_type", "error_description": "JWT bearer only"}, 400)
        try:
            assertion = str(form.get("assertion", ""))
            if jwt.get_unverified_header(assertion).get("kid") != state.private_key_id:
                raise jwt.InvalidTokenError("kid is not the service account's private_key_id")
            claims = jwt.decode(
                assertion,
                state.public_key,
                algorithms=["RS256"],
                audience=[state.token_url, GOOGLE_TOKEN_URL],
                issuer=state.client_email,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
            if claims["exp"] - claims["iat"] > ASSERTION_MAX_LIFETIME_S:
                raise jwt.InvalidTokenError("exp is more than one hour after iat")
        except jwt.InvalidTokenError as exc:
            return _json({"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}, 400)
        if SCOPE not in str(claims.get("scope", "")).split():
            return _json({"error": "invalid_scope", "error_description": f"scope must name {SCOPE}"}, 400)
        access_token = "ya29.local-" + secrets.token_urlsafe(48)
        state.access_tokens[access_token] = time.time() + state.token_lifetime_s
        state.tokens_issued += 1
        body = {"access_token": access_token, "expires_in": state.token_lifetime_s, "token_type": "Bearer"}
        return _json(body)

    async def send(request: Request) -> Response:
        state.sends += 1
        response = await _answer_send(request)
        if response.status_code != 200:
            reason = orjson.loads(response.body)["error"]
            detail = reason["details"][0]["errorCode"] if reason["details"] else reason["status"]
            token = getattr(request.state, "token", "")
            state.rejected.append(
                {"token": token, "status": response.status_code, "reason": detail, "at_ms": _now_ms()}
            )
        return response

    async def _answer_send(request: Request) -> Response:
        # The body first, whatever the answer: hypercorn's HTTP/2 drops the whole connection
        # (KeyError on the stream) when DATA arrives for a stream already answered and closed.
        body = await request.body()
        authorization = request.headers.get("authorization", "")
        expires_at = state.access_tokens.get(authorization.removeprefix("Bearer "))
        if not authorization.startswith("Bearer ") or expires_at is None or expires_at <= time.time():
            message = "Request had invalid authentication credentials. Expected OAuth 2 access token"
            return v1_error(401, "UNAUTHENTICATED", message, None, {"www-authenticate": "Bearer"})
        if request.path_params["project"] != PROJECT_ID:
            return v1_error(403, "PERMISSION_DENIED", "Permission denied on the project", None)
        try:
            message = orjson.loads(body)["message"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return fcm_error("INVALID_ARGUMENT", 'The body must be {"message": {...}}')
        problem = message_problem(message)
        if problem is not None:
            request.state.token = message.get("token", "") if isinstance(message, dict) else ""
            return fcm_error("INVALID_ARGUMENT", problem)
        token = request.state.token = message["token"]
        if ":APA91b" not in token:
            return fcm_error(
                "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"
            )
        if token not in state.targets or token in state.gone:
            return fcm_error("UNREGISTERED", "Requested entity was not found.")
        if token in state.mismatch:
            return fcm_error("SENDER_ID_MISMATCH", "SenderId mismatch")
        fault = state.once.pop(token, None)
        if fault is not None:
            mode, retry_after_s = fault
            retry_after = {"retry-after": str(int(retry_after_s))}
            if mode == "hang":
                await asyncio.sleep(HANG_S)
            if mode == "throttle":
                return fcm_error("QUOTA_EXCEEDED", "Quota exceeded for the device.", retry_after)
            if mode == "unavailable":
                return fcm_error("UNAVAILABLE", "The service is currently unavailable.", retry_after)
            return fcm_error("INTERNAL", "Internal error encountered.")
        headers = {k: v for k, v in request.headers.items() if k != "authorization"}
        state.received.append(
            {
                "token": token,
                "collapse": message["android"]["collapse_key"],
                "headers": headers,
                "payload": message.get("data", {}),
                "message": message,
                "at_ms": _now_ms(),
            }
        )
        return _json({"name": f"projects/{PROJECT_ID}/messages/{next(state.ids)}"})

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", send, methods=["POST"]),
        ]
    )


def control_app(state: FcmState) -> Starlette:
    """The plain HTTP/1.1 side: the shared control API (tests/push_services/__init__.py)."""

    async def targets(request: Request) -> Response:
        count = int((await request.json())["count"])
        made = [f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(105)}" for _ in range(count)]
        state.targets.update(made)
        return _json({"targets": [{"token": token} for token in made]})

    async def faults(request: Request) -> Response:
        body = await request.json()
        mode, tokens = body["mode"], list(body["tokens"])
        retry_after_s = float(body.get("retry_after_s", 1))
        if mode == "gone":
            state.gone.update(tokens)
        elif mode == "mismatch":
            state.mismatch.update(tokens)
        elif mode in ("throttle", "unavailable", "error", "hang"):
            state.once.update((token, (mode, retry_after_s)) for token in tokens)
        else:
            return _json({"error": f"unknown mode {mode!r}"}, 400)
        return _json({"mode": mode, "tokens": len(tokens)})

    async def count(request: Request) -> Response:
        """How many messages were accepted and refused so far (cheap to poll, unlike `received`)."""
        return _json({"received": len(state.received), "rejected": len(state.rejected)})

    async def received(request: Request) -> Response:
        return _json({"messages": state.received})

    async def rejected(request: Request) -> Response:
        return _json({"messages": state.rejected})

    async def stats(request: Request) -> Response:
        body = {
            "tokens_issued": state.tokens_issued,
            "token_requests": state.token_requests,
            "sends": state.sends,
        }
        return _json(body)

    async def revoke(request: Request) -> Response:
        revoked = len(state.access_tokens)
        state.access_tokens.clear()
        return _json({"revoked": revoked})

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    return Starlette(
        routes=[
            Route("/_control/targets", targets, methods=["POST"]),
            Route("/_control/faults", faults, methods=["POST"]),
            Route("/_control/received", received),
            Route("/_control/count", count),
            Route("/_control/rejected", rejected),
            Route("/_control/stats", stats),
            Route("/_control/revoke", revoke, methods=["POST"]),
            Route("/_control/health", health),
        ]
    )


def write_service_account(state_dir: Path, token_url: str) -> tuple[Any, str, str]:
    """Generate an RSA service account and write `service-account.json`; answer its public key,
    private_key_id and client_email."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_key_id = secrets.token_hex(20)
    client_email = f"firebase-adminsdk-local@{PROJECT_ID}.iam.gserviceaccount.com"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    account = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": private_key_id,
        "private_key": pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_url,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{client_email}",
        "universe_domain": "googleapis.com",
    }
    (state_dir / "service-account.json").write_text(json.dumps(account, indent=2))
    return key.public_key(), private_key_id, client_email


def prepare(args: argparse.Namespace) -> FcmState:
    """Write the CA, the TLS certificate and the service account into the state dir."""
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(state_dir / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(state_dir / "server.pem")
    )
    token_url = f"https://127.0.0.1:{args.port}/token"
    public_key, private_key_id, client_email = write_service_account(state_dir, token_url)
    return FcmState(token_url, public_key, private_key_id, client_email, args.token_lifetime_s)


async def main(args: argparse.Namespace, state: FcmState) -> None:
    service = Config()
    service.bind = [f"127.0.0.1:{args.port}"]
    service.certfile = service.keyfile = str(Path(args.state_dir) / "server.pem")
    # Long idle keep-alive, as Google's front ends: a sender keeps its connection between bursts.
    service.keep_alive_timeout = 120
    # Hypercorn closes an HTTP/2 connection after 1,000 requests (default) without answering the
    # streams it already took: the client sees them fail though they were received, and a resend
    # duplicates them. Google's front ends drain in-flight streams on GOAWAY (RFC 9113 §6.8).
    service.keep_alive_max_requests = 2**31
    service.graceful_timeout = 1
    service.accesslog = None
    control = Config()
    control.bind = [f"127.0.0.1:{args.control_port}"]
    control.graceful_timeout = 1
    control.accesslog = None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await asyncio.gather(
        serve(service_app(state), service, shutdown_trigger=stop.wait),  # type: ignore[arg-type]
        serve(control_app(state), control, shutdown_trigger=stop.wait),  # type: ignore[arg-type]
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    # Accepted for a uniform command line (benches pass it to every service): this service's
    # per-request checks are cheap next to a sender's, so it checks everything anyway.
    parser.add_argument("--fast", action="store_true", help="no effect here")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--token-lifetime-s", type=int, default=3_600, help="access tokens' expires_in")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    uvloop.run(main(arguments, prepare(arguments)))
