"""Real parts for every test: a private redis-server, worker and service processes, WebSocket readers.

Each test gets its own redis-server on a free port (so it can be killed and
restarted, and never touches another test's data or a Redis on 6379), and
starts the Flashwire processes it needs exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flashwire.core.keys import Keys
from flashwire.dev.redis_server import RedisProcess, free_port
from flashwire.service.tokens import TokenStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server with append-only persistence, killed after the test."""
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.kill()


class ManagedProcess:
    """A Flashwire process (worker or service) that a test can stop, kill and restart."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout_s: float = 15.0) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ServiceNode(ManagedProcess):
    """A `flashwire serve` process on its own ephemeral port."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        super().__init__([sys.executable, "-m", "flashwire.cli", "serve", "--port", str(port)], env, log_path)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self, timeout_s: float = 20.0) -> ServiceNode:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"service exited:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"service not ready:\n{self.log()}")

    def restart(self) -> ServiceNode:
        self.terminate()
        self.start()
        return self.wait_ready()


class Stack:
    """The processes of one test, all stopped at teardown."""

    def __init__(self, redis_server: RedisProcess, tmp_path: Path) -> None:
        self.redis_server = redis_server
        self.tmp_path = tmp_path
        self.processes: list[ManagedProcess] = []
        self.keys = Keys("fw")
        self.env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "FLASHWIRE_HEARTBEAT_S": "5",
            "FLASHWIRE_CLAIM_IDLE_MS": "1000",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("FLASHWIRE_DATA_DIR", None)

    def worker(self, **env: str) -> ManagedProcess:
        index = len(self.processes)
        process = ManagedProcess(
            [sys.executable, "-m", "flashwire.cli", "worker"],
            {**self.env, **env},
            self.tmp_path / f"worker-{index}.log",
        ).start()
        self.processes.append(process)
        return process

    def service(self, **env: str) -> ServiceNode:
        index = len(self.processes)
        node = ServiceNode({**self.env, **env}, self.tmp_path / f"service-{index}.log", free_port())
        node.start()
        self.processes.append(node)
        return node.wait_ready()

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_server.url)

    async def token(self, role: str = "editor", editions: list[str] | None = None, name: str = "Amal") -> str:
        redis = self.redis()
        try:
            secret, _ = await TokenStore(redis, self.keys).create(
                name=name, role=role, editions=editions or ["en"]
            )
            return secret
        finally:
            await redis.aclose()

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate(timeout_s=5)


@pytest.fixture
def stack(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Stack]:
    """Start worker and service processes on demand against the test's Redis."""
    created = Stack(redis_server, tmp_path)
    yield created
    created.close()


class Reader:
    """A WebSocket reader that records every message it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout_s)
        message: dict[str, Any] = orjson.loads(raw)
        self.messages.append(message)
        return message

    async def next_of(self, *types: str, timeout_s: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message["type"] in types:
                return message

    async def events(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The next `count` line/update/retract events."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message["type"] in ("line", "update", "retract"):
                found.append(message)
        return found

    async def until_closed(self, timeout_s: float = 10.0) -> int | None:
        try:
            while True:
                await self.next(timeout_s)
        except ConnectionClosed as closed:
            if closed.rcvd is not None:
                self.close_code, self.close_reason = closed.rcvd.code, closed.rcvd.reason
            return self.close_code


async def open_reader(url: str, query: str = "", **kwargs: Any) -> Reader:
    """Connect to /ws with a query string and wait for hello."""
    ws = await connect(f"{url}?{query}" if query else url, compression=None, **kwargs)
    reader = Reader(ws)
    hello = await reader.next()
    assert hello["type"] == "hello"
    return reader


@pytest.fixture
async def readers() -> AsyncIterator[list[Reader]]:
    """Readers opened by a test are closed at teardown."""
    opened: list[Reader] = []
    yield opened
    for reader in opened:
        await reader.ws.close()


async def post_line(
    client: httpx.AsyncClient, token: str, text: str, *, edition: str = "en", **fields: Any
) -> dict[str, Any]:
    """Post a line through the API; assert 201."""
    response = await client.post(
        "/api/v1/lines",
        json={"edition": edition, "text": text, **fields},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
