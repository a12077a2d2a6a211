"""A partner's webhook receiver for the tests: a real HTTP(S) server that verifies every request with
the `standardwebhooks` library, as a partner following docs/webhooks.md would, and records it.

It runs on a thread of its own (http.server), so a test's event loop stays free to drive the
stack while the receiver holds a request. `answer` decides each request's status (and may hold
it: `hold_s`); `stop()` and `start()` take it down and bring it back on the same port.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    """One request as the receiver saw it."""

    webhook_id: str
    timestamp: str
    signature: str
    host: str
    body: bytes
    verified: bool
    error: str = ""
    status: int = 0
    message: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.message.get("type", ""))


# (request, how many requests with this webhook-id came before it) -> (status, seconds to hold it)
Answer = Callable[[Received, int], tuple[int, float]]


def always(status: int) -> Answer:
    return lambda _received, _seen: (status, 0.0)


class Receiver:
    """A webhook receiver on 127.0.0.1; `tls` for https with a trustme CA (`ca_file` for the worker)."""

    def __init__(self, tmp_path: Path, *, tls: bool = False) -> None:
        self.secret = ""
        self.answer: Answer = always(204)
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self.ca_file = ""
        if tls:
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._tls)
            ca_path = tmp_path / "receiver-ca.pem"
            ca.cert_pem.write_to_path(str(ca_path))
            self.ca_file = str(ca_path)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/hooks/flashwire"

    def url_named(self, host: str = "localhost") -> str:
        """The same URL with a host name instead of the address."""
        return self.url.replace("127.0.0.1", host)

    def start(self) -> None:
        """Listen (again, on the same port after `stop`)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                status, hold_s = receiver._handle(dict(self.headers.items()), body)
                if hold_s:
                    time.sleep(hold_s)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        lowered = {k.lower(): v for k, v in headers.items()}
        received = Received(
            webhook_id=lowered.get("webhook-id", ""),
            timestamp=lowered.get("webhook-timestamp", ""),
            signature=lowered.get("webhook-signature", ""),
            host=lowered.get("host", ""),
            body=body,
            verified=False,
        )
        try:
            # docs/webhooks.md: any error verifying (not only WebhookVerificationError) is a 400.
            Webhook(self.secret).verify(body, headers)
            received.verified = True
            received.message = json.loads(body)
        except Exception as exc:
            received.error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            seen = sum(1 for r in self.requests if r.webhook_id == received.webhook_id)
            status, hold_s = self.answer(received, seen) if received.verified else (400, 0.0)
            received.status = status
            self.requests.append(received)
        return status, hold_s

    def accepted(self) -> list[Received]:
        """The verified requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.verified and 200 <= r.status < 300]

    def unverified(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if not r.verified]
