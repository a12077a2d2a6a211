"""A local APNs provider endpoint: HTTP/2 over TLS, token-based authentication (hypercorn).

    python -m tests.push_services.apns --port P --control-port C --state-dir D [--topic T]
        [--max-requests N]

On start it writes into D:

- `ca.pem`: the CA (trustme) of its TLS certificate for 127.0.0.1 and localhost, the sender's
  `ca_file`;
- `apns-key.p8`: the provider key it accepts (a fresh EC P-256 key, PKCS#8 PEM), and
  `apns-provider.json` {"key_id", "team_id", "topic"}: what the sender is built with.

`POST /3/device/<token>` checks what APNs checks (Apple, "Sending notification requests to APNs"
and "Handling notification responses from APNs") and answers with APNs' status and reason:

- HTTP/2 only (ALPN h2; an HTTP/1.1 request is answered 400 "BadRequest"; not an Apple reason);
- `authorization: bearer <JWT>`: ES256, `kid` = the key id, `iss` = the team id, `iat` not
  older than an hour (403 MissingProviderToken / InvalidProviderToken / ExpiredProviderToken);
- `apns-topic` = `--topic` (400 MissingTopic / TopicDisallowed); `apns-push-type` one of
  Apple's (400 InvalidPushType); `apns-priority` 5 or 10 (400 BadPriority); `apns-expiration`
  an integer (400 BadExpirationDate); `apns-collapse-id` at most 64 bytes (400 BadCollapseId).
  Stricter than Apple, which defaults them: priority and expiration must be given, push type too;
- a body of at most 4,096 bytes (413 PayloadTooLarge), not empty (400 PayloadEmpty), a JSON
  object with an `aps` object (400 "BadPayload"; Apple does not document this answer);
- the token 64 hex digits and one this service made (400 BadDeviceToken otherwise).

The control API (tests/push_services/__init__.py) on the control port, plain HTTP/1.1, plus:

- fault `"mode": "hang"`: the next send to each token is never answered (until the service stops);
- fault `"mode": "expire_token"` (`tokens` ignored): every provider token seen so far is answered
  403 ExpiredProviderToken from now on, as APNs answers a token over an hour old;
- `GET /_control/stats` → {"provider_tokens": distinct provider tokens (JWT strings) accepted,
  "connections": distinct HTTP/2 connections (client address and port) that sent requests}.

`--max-requests N`: hypercorn's `keep_alive_max_requests`; after N requests on one connection
the service sends GOAWAY, as APNs does now and then (../shared/PITFALLS.md 1.21).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import string
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PAYLOAD_MAX_BYTES = 4_096
COLLAPSE_ID_MAX_BYTES = 64
TOKEN_MAX_AGE_S = 3_600
PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity"}
)
HEX = frozenset(string.hexdigits.lower())
RECORDED_HEADERS = (
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-topic",
    "apns-id",
    "content-type",
)


class Refusal(Exception):
    """An APNs error answer: status, reason and (410 only) the timestamp in ms."""

    def __init__(self, status: int, reason: str, *, timestamp_ms: int | None = None, **headers: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.timestamp_ms = timestamp_ms
        self.headers = headers


@dataclass
class State:
    """Everything the service remembers, in memory."""

    public_key: ec.EllipticCurvePublicKey
    key_id: str
    team_id: str
    topic: str
    tokens: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    throttle: dict[str, float] = field(default_factory=dict)
    error: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)
    provider_tokens: dict[str, int] = field(default_factory=dict)  # accepted JWT → iat
    expired: set[str] = field(default_factory=set)
    connections: set[tuple[str, int]] = field(default_factory=set)
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def verify(self, authorization: str | None) -> None:
        """Check the provider token (Apple, "Establishing a token-based connection to APNs")."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Refusal(403, "MissingProviderToken")
        token = authorization[7:].strip()
        iat = self.provider_tokens.get(token)
        if iat is None:
            # A token is verified once, then remembered: APNs too caches a connection's token.
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(
                    token, self.public_key, algorithms=["ES256"], options={"require": ["iss", "iat"]}
                )
            except jwt.PyJWTError as exc:
                raise Refusal(403, "InvalidProviderToken") from exc
            if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
                raise Refusal(403, "InvalidProviderToken")
            iat = claims["iat"]
            if not isinstance(iat, int):
                raise Refusal(403, "InvalidProviderToken")
            if time.time() - iat > TOKEN_MAX_AGE_S:
                raise Refusal(403, "ExpiredProviderToken")
            self.provider_tokens[token] = iat
        if token in self.expired or time.time() - iat > TOKEN_MAX_AGE_S:
            raise Refusal(403, "ExpiredProviderToken")


def _check_headers(state: State, headers: dict[str, str]) -> None:
    topic = headers.get("apns-topic")
    if not topic:
        raise Refusal(400, "MissingTopic")
    if topic != state.topic:
        raise Refusal(400, "TopicDisallowed")
    if headers.get("apns-push-type") not in PUSH_TYPES:
        raise Refusal(400, "InvalidPushType")
    if headers.get("apns-priority") not in ("5", "10"):
        raise Refusal(400, "BadPriority")
    expiration = headers.get("apns-expiration", "")
    if not expiration.isdigit():
        raise Refusal(400, "BadExpirationDate")
    if len(headers.get("apns-collapse-id", "").encode()) > COLLAPSE_ID_MAX_BYTES:
        raise Refusal(400, "BadCollapseId")


def _check_payload(body: bytes) -> Any:
    if len(body) > PAYLOAD_MAX_BYTES:
        raise Refusal(413, "PayloadTooLarge")
    if not body:
        raise Refusal(400, "PayloadEmpty")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal(400, "BadPayload") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        raise Refusal(400, "BadPayload")
    return payload


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def push_app(state: State) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The APNs endpoint as a bare ASGI app (no framework: thousands of requests a second)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            return
        if scope["type"] != "http":
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        body = await _read_body(receive)
        path: str = scope["path"]
        device = path[len("/3/device/") :] if path.startswith("/3/device/") else ""
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        try:
            if scope.get("http_version") != "2":
                raise Refusal(400, "BadRequest")
            if not path.startswith("/3/device/"):
                raise Refusal(404, "BadPath")
            if scope["method"] != "POST":
                raise Refusal(405, "MethodNotAllowed")
            state.connections.add(tuple(scope["client"]))
            state.verify(headers.get("authorization"))
            _check_headers(state, headers)
            payload = _check_payload(body)
            if not device:
                raise Refusal(400, "MissingDeviceToken")
            if len(device) != 64 or not HEX.issuperset(device) or device not in state.tokens:
                raise Refusal(400, "BadDeviceToken")
            if device in state.gone:
                raise Refusal(410, "Unregistered", timestamp_ms=int(time.time() * 1000))
            if device in state.hang:
                state.hang.discard(device)
                await state.stopping.wait()
                return
            retry_after_s = state.throttle.pop(device, None)
            if retry_after_s is not None:
                raise Refusal(429, "TooManyRequests", retry_after=str(int(retry_after_s)))
            if device in state.error:
                state.error.discard(device)
                raise Refusal(500, "InternalServerError")
        except Refusal as refusal:
            state.rejected.append(
                {"token": device, "status": refusal.status, "reason": refusal.reason, "at_ms": _now_ms()}
            )
            answer: dict[str, Any] = {"reason": refusal.reason}
            if refusal.timestamp_ms is not None:
                answer["timestamp"] = refusal.timestamp_ms
            response_headers = [(b"apns-id", apns_id.encode()), (b"content-type", b"application/json")]
            response_headers += [
                (k.replace("_", "-").encode(), v.encode()) for k, v in refusal.headers.items()
            ]
            await _answer(send, refusal.status, orjson.dumps(answer), response_headers)
            return
        state.received.append(
            {
                "token": device,
                "collapse": headers.get("apns-collapse-id"),
                "headers": {name: headers[name] for name in RECORDED_HEADERS if name in headers},
                "payload": payload,
                "at_ms": _now_ms(),
            }
        )
        await _answer(send, 200, b"", [(b"apns-id", apns_id.encode())])

    return app


def control_app(state: State) -> Starlette:
    """The shared control API (tests/push_services/__init__.py) and `stats`."""

    async def targets(request: Request) -> Response:
        count = int((await request.json())["count"])
        made = [secrets.token_hex(32) for _ in range(count)]
        state.tokens.update(made)
        return JSONResponse({"targets": [{"token": token} for token in made]})

    async def faults(request: Request) -> Response:
        body = await request.json()
        mode, tokens = body["mode"], list(body.get("tokens", []))
        if mode == "gone":
            state.gone.update(tokens)
        elif mode == "throttle":
            state.throttle.update(dict.fromkeys(tokens, float(body.get("retry_after_s", 1))))
        elif mode == "error":
            state.error.update(tokens)
        elif mode == "hang":
            state.hang.update(tokens)
        elif mode == "expire_token":
            state.expired.update(state.provider_tokens)
        else:
            return JSONResponse({"error": f"unknown mode {mode!r}"}, status_code=400)
        return JSONResponse({"ok": True})

    async def count(request: Request) -> Response:
        """How many messages were accepted and refused so far (cheap to poll, unlike `received`)."""
        return JSONResponse({"received": len(state.received), "rejected": len(state.rejected)})

    async def received(request: Request) -> Response:
        return JSONResponse({"messages": state.received})

    async def rejected(request: Request) -> Response:
        return JSONResponse({"messages": state.rejected})

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {"provider_tokens": len(state.provider_tokens), "connections": len(state.connections)}
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/_control/targets", targets, methods=["POST"]),
            Route("/_control/faults", faults, methods=["POST"]),
            Route("/_control/received", received),
            Route("/_control/count", count),
            Route("/_control/rejected", rejected),
            Route("/_control/stats", stats),
            Route("/_control/health", health),
        ]
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _write_credentials(state_dir: Path, topic: str) -> tuple[State, trustme.CA]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(state_dir / "ca.pem"))
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (state_dir / "apns-key.p8").write_bytes(pem)
    key_id = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))
    team_id = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))
    (state_dir / "apns-provider.json").write_text(
        json.dumps({"key_id": key_id, "team_id": team_id, "topic": topic})
    )
    return State(public_key=key.public_key(), key_id=key_id, team_id=team_id, topic=topic), ca


def configure(args: argparse.Namespace) -> tuple[State, Config, Config]:
    """Write the CA, the provider key and its ids into the state dir; the two servers' configs."""
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state, ca = _write_credentials(state_dir, args.topic)
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(state_dir / "apns-server.pem"))

    push = Config()
    push.bind = [f"127.0.0.1:{args.port}"]
    push.certfile = push.keyfile = str(state_dir / "apns-server.pem")
    push.alpn_protocols = ["h2"]
    push.keep_alive_max_requests = args.max_requests
    push.h2_max_concurrent_streams = 1_000  # APNs allows up to 1,000 streams a connection
    push.graceful_timeout = 0.5
    push.accesslog = None
    control = Config()
    control.bind = [f"127.0.0.1:{args.control_port}"]
    control.graceful_timeout = 0.5
    control.accesslog = None
    return state, push, control


async def main(state: State, push: Config, control: Config) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, state.stopping.set)
    await asyncio.gather(
        serve(push_app(state), push, shutdown_trigger=state.stopping.wait),  # type: ignore[arg-type]
        serve(control_app(state), control, shutdown_trigger=state.stopping.wait),  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    # Accepted for a uniform command line (benches pass it to every service): this service's
    # per-request checks are cheap next to a sender's, so it checks everything anyway.
    parser.add_argument("--fast", action="store_true", help="no effect here")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--topic", default="org.flashwire.app")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    import uvloop  # uvicorn[standard] brings it

    uvloop.run(main(*configure(parser.parse_args())))
