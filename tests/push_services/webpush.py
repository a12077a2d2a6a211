"""A local RFC 8030 push service: checks what a real one checks, decrypts what it receives.

    python -m tests.push_services.webpush --port P --control-port C [--state-dir D]

One uvicorn server, two listening sockets: the push API on P (plain HTTP; its origin,
`http://127.0.0.1:P`, is the `aud` every VAPID token must carry) and the control API of
tests/push_services/__init__.py on C. Everything is kept in memory.

Push API, `POST /push/<subscription id>` (RFC 8030 §5), checked in this order:
- `TTL` header missing or not a non-negative integer → 400 (§5.2);
- `Urgency` present and not one of very-low, low, normal, high → 400 (§5.3);
- `Topic` present and not 1-32 base64url characters → 400 (§5.4);
- `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292 §3) missing, unreadable, or a JWT that is not
  ES256-signed by `k`, whose `aud` is not this origin, whose `exp` is past or more than 24 h
  ahead, or whose `sub` is not a `mailto:`/`https:` URI → 401; a `k` other than the
  subscription's applicationServerKey (when the target was made with one) → 403 (RFC 8292 §4.2);
- an unknown subscription → 404; a subscription told `gone` → 410;
- a body over 4,096 bytes → 413 (§7.2); `Content-Encoding` other than aes128gcm, or a body that
  does not decrypt with the subscription's private key and auth secret (RFC 8291) → 400;
- otherwise 201 Created, `Location: /message/<id>`, and `TTL` echoed (§5.2).

Faults (`POST /_control/faults`): `gone`, `throttle` (next send 429 with Retry-After), `error`
(next send 500), and `hang`: the next send to each target gets no answer for `hang_s` seconds
(default 3600; then a 504), for a sender's timeout. `tokens` are the subscriptions' endpoint URLs.

Control API additions: `POST /_control/targets` takes an optional `application_server_key`
(base64url) that the targets are restricted to; `GET /_control/inbox` →
`{"inbox": {endpoint: [message, ...]}}`: per subscription, the latest message per Topic in order
of arrival (messages without a Topic all stay), i.e. what a device shows after RFC 8030 §5.4
replacement; `GET /_control/stats` → `{"connections": N}`, how many client connections ever
sent to the push API (a sender that reuses its connections keeps this at its pool size).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

MAX_BODY_BYTES = 4096
VAPID_MAX_AHEAD_S = 24 * 3600
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://[^/\s]+.*)$")
_URGENCIES = ("very-low", "low", "normal", "high")
_KEPT_HEADERS = ("TTL", "Urgency", "Topic")
_AUTH = re.compile(r"^vapid\s+(.*)$", re.IGNORECASE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None = None
    gone: bool = False
    # One-shot faults, taken by the next send: ("throttle", retry_after_s), ("error", 0), ("hang", s).
    faults: list[tuple[str, float]] = field(default_factory=list)


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class PushServiceState:
    """Subscriptions, faults and messages of one push service, in memory."""

    def __init__(self, origin: str, *, decrypt: bool = True) -> None:
        self.origin = origin
        # Off with --fast (benches): VAPID and headers are still checked, bodies are not decrypted
        # (and `payload` is null), so that this stand-in is not what a bench measures.
        self.decrypt = decrypt
        self.subscriptions: dict[str, Subscription] = {}
        self.received: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        # The client (address, port) pairs that sent to the push API: how many connections a
        # sender opened (one per connection, since HTTP/1.1 keep-alive reuses the port).
        self.clients: set[tuple[str, int]] = set()
        # Verified (token, key) → claims: a real service also avoids verifying one token twice;
        # `exp` is checked again on every use.
        self._tokens: dict[tuple[str, str], dict[str, Any]] = {}

    def endpoint(self, sid: str) -> str:
        return f"{self.origin}/push/{sid}"

    def new_target(self, application_server_key: str | None) -> dict[str, Any]:
        sid = secrets.token_urlsafe(16)
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        self.subscriptions[sid] = Subscription(sid, key, auth, application_server_key)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": self.endpoint(sid), "keys": {"p256dh": _b64url(point), "auth": _b64url(auth)}}

    def subscription_of(self, token: str) -> Subscription:
        sid = token.rstrip("/").rsplit("/", 1)[-1]
        return self.subscriptions[sid]

    def check_vapid(self, authorization: str | None, now_s: float) -> str:
        """Answer the key `k` of a valid `vapid` Authorization (RFC 8292 §3); Refused(401) otherwise."""
        match = _AUTH.match(authorization or "")
        if match is None:
            raise Refused(401, "missing vapid authorization")
        params: dict[str, str] = {}
        for part in match.group(1).split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        token, key = params.get("t", ""), params.get("k", "")
        if not token or not key:
            raise Refused(401, "vapid authorization needs t and k")
        claims = self._tokens.get((token, key))
        if claims is None:
            try:
                public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64url(key))
                claims = jwt.decode(
                    token,
                    key=public_key,
                    algorithms=["ES256"],
                    audience=self.origin,
                    options={"require": ["aud", "exp", "sub"]},
                )
            except (ValueError, jwt.PyJWTError) as error:
                raise Refused(401, f"bad vapid token: {error}") from None
            if not isinstance(claims.get("sub"), str) or not _SUBJECT.match(claims["sub"]):
                raise Refused(401, "vapid sub must be a mailto: or https: URI")
            self._tokens[(token, key)] = claims
        exp = claims["exp"]
        if not isinstance(exp, int) or exp <= now_s:
            raise Refused(401, "vapid token expired")
        if exp > now_s + VAPID_MAX_AHEAD_S:
            raise Refused(401, "vapid exp more than 24 hours ahead")
        return key

    async def push(self, sid: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """Check and take one message (see the module docstring); Refused for each refusal."""
        now_s = time.time()
        ttl = headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            raise Refused(400, "TTL header missing or invalid")
        if headers.get("urgency", "normal") not in _URGENCIES:
            raise Refused(400, "Urgency must be very-low, low, normal or high")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC.match(topic):
            raise Refused(400, "Topic must be 1-32 base64url characters")
        key = self.check_vapid(headers.get("authorization"), now_s)
        subscription = self.subscriptions.get(sid)
        if subscription is None:
            raise Refused(404, "no such subscription")
        if subscription.application_server_key not in (None, key):
            raise Refused(403, "vapid key is not the subscription's applicationServerKey")
        if subscription.gone:
            raise Refused(410, "subscription expired")
        if subscription.faults:
            mode, value = subscription.faults.pop(0)
            if mode == "throttle":
                raise Refused(429, "throttled", {"Retry-After": str(int(value))})
            if mode == "error":
                raise Refused(500, "internal error")
            await asyncio.sleep(value)  # hang
            raise Refused(504, "hung")
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, "payload too large")
        if headers.get("content-encoding", "").lower() != "aes128gcm":
            raise Refused(400, "Content-Encoding must be aes128gcm")
        payload: Any = None
        if self.decrypt:
            try:
                plain = http_ece.decrypt(
                    body,
                    private_key=subscription.private_key,
                    auth_secret=subscription.auth,
                    version="aes128gcm",
                )
            except Exception as error:  # http_ece raises ECEException, cryptography InvalidTag, ValueError
                raise Refused(400, f"does not decrypt: {type(error).__name__}") from None
            try:
                payload = json.loads(plain)
            except ValueError:
                payload = plain.decode("utf-8", "replace")
        kept = {name: headers[name.lower()] for name in _KEPT_HEADERS if name.lower() in headers}
        message = {
            "token": self.endpoint(sid),
            "collapse": topic,
            "headers": kept,
            "payload": payload,
            "at_ms": _now_ms(),
        }
        self.received.append(message)
        return message

    def inbox(self) -> dict[str, list[dict[str, Any]]]:
        """Per endpoint, the latest message per Topic, in arrival order (RFC 8030 §5.4)."""
        shown: dict[str, dict[Any, dict[str, Any]]] = {}
        for index, message in enumerate(self.received):
            slots = shown.setdefault(message["token"], {})
            slot = message["collapse"] if message["collapse"] is not None else ("untopiced", index)
            slots.pop(slot, None)
            slots[slot] = message
        return {token: list(slots.values()) for token, slots in shown.items()}


def build_app(state: PushServiceState, control_port: int) -> Any:
    """One ASGI app: the control API on `control_port`, the push API on every other port."""

    async def push(request: Request) -> Response:
        sid = request.path_params["sid"]
        if request.client is not None:
            state.clients.add((request.client.host, request.client.port))
        try:
            message = await state.push(sid, {k: v for k, v in request.headers.items()}, await request.body())
        except Refused as refused:
            status, reason = refused.status, refused.reason
            state.rejected.append(
                {"token": state.endpoint(sid), "status": status, "reason": reason, "at_ms": _now_ms()}
            )
            return JSONResponse({"code": status, "message": reason}, status, refused.headers)
        location = f"{state.origin}/message/{secrets.token_urlsafe(12)}"
        return Response(status_code=201, headers={"Location": location, "TTL": message["headers"]["TTL"]})

    async def targets(request: Request) -> Response:
        body = await request.json()
        key = body.get("application_server_key")
        return JSONResponse({"targets": [state.new_target(key) for _ in range(int(body["count"]))]})

    async def faults(request: Request) -> Response:
        body = await request.json()
        mode = body["mode"]
        if mode not in ("gone", "throttle", "error", "hang"):
            return JSONResponse({"error": f"unknown mode {mode!r}"}, 400)
        for token in body["tokens"]:
            subscription = state.subscription_of(token)
            if mode == "gone":
                subscription.gone = True
            elif mode == "hang":
                subscription.faults.append(("hang", float(body.get("hang_s", 3600))))
            else:
                subscription.faults.append((mode, float(body.get("retry_after_s", 1))))
        return JSONResponse({"ok": True})

    async def count(request: Request) -> Response:
        """How many messages were accepted and refused so far (cheap to poll, unlike `received`)."""
        return JSONResponse({"received": len(state.received), "rejected": len(state.rejected)})

    async def received(request: Request) -> Response:
        return JSONResponse({"messages": state.received})

    async def rejected(request: Request) -> Response:
        return JSONResponse({"messages": state.rejected})

    async def inbox(request: Request) -> Response:
        return JSONResponse({"inbox": state.inbox()})

    async def stats(request: Request) -> Response:
        return JSONResponse({"connections": len(state.clients)})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    push_app = Starlette(routes=[Route("/push/{sid}", push, methods=["POST"])])
    control_app = Starlette(
        routes=[
            Route("/_control/targets", targets, methods=["POST"]),
            Route("/_control/faults", faults, methods=["POST"]),
            Route("/_control/received", received),
            Route("/_control/count", count),
            Route("/_control/rejected", rejected),
            Route("/_control/inbox", inbox),
            Route("/_control/stats", stats),
            Route("/_control/health", health),
        ]
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        chosen = control_app if server is not None and server[1] == control_port else push_app
        await chosen(scope, receive, send)

    return app


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--state-dir", default=None, help="unused: this service keeps everything in memory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fast", action="store_true", help="do not decrypt bodies (benches)")
    args = parser.parse_args()
    state = PushServiceState(f"http://{args.host}:{args.port}", decrypt=not args.fast)
    config = uvicorn.Config(
        build_app(state, args.control_port),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A `hang` fault keeps a request open for an hour: do not wait for it on SIGTERM.
        timeout_graceful_shutdown=1,
        backlog=2048,
    )
    sockets = [_listen(args.host, args.port), _listen(args.host, args.control_port)]
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
