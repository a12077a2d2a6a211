"""Local stand-ins for the platforms' push services, each a real server in its own process.

No platform push service is reachable from the test machines, so the tests run servers that
speak each platform's documented HTTP API and check what the real one checks (docs/testing.md):

- `tests.push_services.webpush`: an RFC 8030 push service that verifies the RFC 8292 VAPID JWT
  and decrypts every message (RFC 8291, aes128gcm) with the subscription's private key;
- `tests.push_services.apns`: an APNs provider endpoint over HTTP/2 with TLS that verifies the
  ES256 provider token and the apns-* headers;
- `tests.push_services.fcm`: FCM HTTP v1 `messages:send` plus the OAuth2 token endpoint that
  verifies the service account's signed JWT assertion.

They share one control API, under `/_control/` on the `control_url` (plain HTTP/1.1 on its own
port, so a test needs no HTTP/2 or TLS to steer a service):

- `POST /_control/targets {"count": N}` → `{"targets": [...]}`: N new targets the service
  knows, in the shape the registration API takes for the platform (Web Push: `{"endpoint",
  "keys": {"p256dh", "auth"}}`; FCM: `{"token"}`; APNs: `{"token"}`);
- `POST /_control/faults {"mode": "gone" | "throttle" | "error", "tokens": [...],
  "retry_after_s": 1}`: `gone` answers every later send to those targets as the platform says
  "unregistered" (Web Push 410, FCM 404 UNREGISTERED, APNs 410 Unregistered with a timestamp
  of now); `throttle` answers the next send to each 429 with `Retry-After`, then accepts;
  `error` answers the next send to each 500, then accepts;
- `GET /_control/received` → `{"messages": [{"token", "collapse", "headers", "payload",
  "at_ms"}, ...]}` every accepted message in arrival order, `payload` decoded (Web Push:
  decrypted), `collapse` the platform's collapse key (Topic, collapse_key, apns-collapse-id);
- `GET /_control/count` → `{"received": n, "rejected": m}`: cheap to poll;
- `GET /_control/rejected` → `{"messages": [{"token", "status", "reason", "at_ms"}, ...]}`;
- `GET /_control/health` → 200 once the service listens.

`PushService` below starts one of them on free ports and stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import die_with_parent
from tests.untraced import untraced

ROOT = Path(__file__).resolve().parent.parent.parent


class PushService:
    """One local push service process: `python -m tests.push_services.<name> --port P
    --control-port C [--state-dir D]`, where it may write what a test needs (a CA, keys)."""

    def __init__(self, name: str, state_dir: Path, *extra_args: str) -> None:
        self.name = name
        self.state_dir = state_dir
        self.port = free_port()
        self.control_port = free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self, timeout_s: float = 20.0) -> PushService:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            f"tests.push_services.{self.name}",
            "--port",
            str(self.port),
            "--control-port",
            str(self.control_port),
            "--state-dir",
            str(self.state_dir),
            *self.extra_args,
        ]
        # It runs no Flashwire code: no coverage tracer in it (tests/untraced.py).
        env = untraced({**os.environ, "PYTHONPATH": str(ROOT)})
        log = (self.state_dir / f"{self.name}.log").open("ab")
        with log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{self.control_url}/_control/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start; see {log.name}")
            time.sleep(0.05)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, f"{self.control_url}/_control/{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def targets(self, count: int) -> list[dict[str, Any]]:
        return list(self.control("POST", "targets", {"count": count})["targets"])

    def faults(self, mode: str, tokens: list[str], retry_after_s: float = 1) -> None:
        self.control("POST", "faults", {"mode": mode, "tokens": tokens, "retry_after_s": retry_after_s})

    def count(self) -> int:
        """How many messages the service accepted so far."""
        return int(self.control("GET", "count")["received"])

    def received(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "received")["messages"])

    def rejected(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "rejected")["messages"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
