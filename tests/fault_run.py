"""The fault run: real processes, editors, readers and faults, recorded for the delivery model.

One Redis (append-only), several `flashwire serve` nodes and two `flashwire worker`s; editor
tasks post, correct and retract lines through the API with Idempotency-Keys, retrying until
201, so every action ends acknowledged with its desk id; WebSocket and SSE readers with random
filters record every message exactly as the server sent it and reconnect as real clients do
(WebSocket with `since=` their last cursors, SSE with the browser's own Last-Event-ID), and,
if asked, readers that are the JavaScript client (tests/js_readers.py), which reconnect as the
library decides; node, worker and Redis processes are SIGKILLed and restarted meanwhile. When
everything is applied and delivered, tests/delivery_model.py checks the recording.

The pytest run (tests/test_delivery_model.py) and the soak (bench/soak.py) use this module
with different sizes; nothing here asserts: the outcome says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from flashwire.core.keys import Keys
from flashwire.core.settings import DEFAULT_EDITIONS, DEFAULT_REGIONS, DEFAULT_SECTIONS
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess
from flashwire.service.tokens import TokenStore
from tests.conftest import UNLIMITED_RATES, ManagedProcess, ServiceNode
from tests.delivery_model import (
    Action,
    Connection,
    ReaderFilter,
    ReaderRecord,
    Report,
    TickerEvent,
    Timeline,
    check,
    cursor_key,
    desk_order,
    event_from_entry,
    parse_cursor_set,
)

EDITIONS = DEFAULT_EDITIONS
TOPICS = DEFAULT_SECTIONS + DEFAULT_REGIONS
URGENCIES = ("flash", "urgent", "routine")
EVENT_TYPES = frozenset({"snapshot", "line", "update", "retract"})
FAULT_KINDS = ("node", "worker", "redis")

# Headlines to vary; each text also carries the editor, line number and version, so that every
# version of every line is distinguishable in the recording.
HEADLINES = {
    "en": (
        "Ceasefire talks resume in Doha",
        "Central bank holds rates steady",
        "Earthquake shakes coastal city",
        "Election results delayed overnight",
        "Floods close main highway",
        "Striker signs record transfer",
    ),
    "ar": (
        "\u0627\u0633\u062a\u0626\u0646\u0627\u0641 \u0627\u0644\u0645\u062d\u0627\u062f\u062b\u0627\u062a",
        "\u0632\u0644\u0632\u0627\u0644 \u064a\u0636\u0631\u0628 \u0627\u0644\u0633\u0627\u062d\u0644",
        "\u062a\u0623\u062c\u064a\u0644 \u0627\u0644\u0646\u062a\u0627\u0626\u062c",
        "\u0627\u0644\u0628\u0646\u0643 \u0627\u0644\u0645\u0631\u0643\u0632\u064a \u064a\u062b\u0628\u062a",
    ),
    "es": (
        "Se reanudan las negociaciones",
        "El banco central mantiene los tipos",
        "Un terremoto sacude la costa",
        "Inundaciones cortan la autopista",
    ),
}


class HarnessError(RuntimeError):
    """The harness could not do what the run needs (not a finding about the service)."""


@dataclass(frozen=True)
class RunConfig:
    """The size and pace of one run; the defaults are the pytest run's."""

    seed: int
    work_dir: Path
    nodes: int = 3
    workers: int = 2
    ws_readers: int = 150
    sse_readers: int = 60
    # Readers that are the JavaScript client (tests/js_readers.py): one Node process runs them all;
    # a share of them uses SSE only, the others the default transport (WebSocket, SSE if blocked).
    js_readers: int = 0
    js_sse_share: float = 0.3
    editors: int = 4
    # Lines each editor posts to `seed_edition` before readers connect: more than 200 live lines
    # in one edition makes every snapshot exercise the cap-after-filter rule.
    seed_lines_per_editor: int = 60
    seed_edition: str = "en"
    edit_s: float = 30.0
    action_pause_s: tuple[float, float] = (0.03, 0.15)
    post_share: float = 0.35
    retract_share: float = 0.15
    # An editor holding this many live lines retracts instead of posting (keeps soaks bounded).
    max_live_per_editor: int | None = None
    # (fraction of edit_s, kind) for a fixed schedule; or a random fault every `fault_every_s`.
    faults: tuple[tuple[float, str], ...] = ((0.2, "node"), (0.45, "worker"), (0.7, "redis"))
    fault_every_s: float | None = None
    node_down_s: float = 0.3
    worker_down_s: float = 0.5
    redis_down_s: float = 2.0
    node_kill_in_redis_outage: bool = True
    heartbeat_s: float = 3.0
    reader_batch: int = 30
    backoff_base_s: float = 0.25
    backoff_max_s: float = 4.0
    refusal_delay_s: float = 5.0  # after a 1013 or 503: d = max(d, this), as the contract's clients do
    request_timeout_s: float = 5.0
    action_deadline_s: float = 60.0
    quiet_timeout_s: float = 30.0
    grace_s: float = 1.0
    snapshot_max_lines: int = 500

    @property
    def readers(self) -> int:
        """Readers of every kind."""
        return self.ws_readers + self.sse_readers + self.js_readers


@dataclass(frozen=True)
class FaultRecord:
    """One fault the run injected."""

    at_s: float
    kind: str
    target: str
    down_s: float


@dataclass
class RunOutcome:
    """What happened in a run, and the checker's report on it."""

    config: RunConfig
    report: Report | None = None
    actions: list[Action] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    worker_revivals: list[str] = field(default_factory=list)
    node_revivals: list[str] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # harness trouble that does not void the run
    api_attempts: Counter[str] = field(default_factory=Counter)
    connection_ends: Counter[str] = field(default_factory=Counter)
    quiet: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    log_tails: dict[str, str] = field(default_factory=dict)
    # JavaScript readers whose own store of lines differs from the model, or that stopped.
    js_store: list[str] = field(default_factory=list)
    records: list[ReaderRecord] = field(default_factory=list)  # every reader's, as checked

    @property
    def ok(self) -> bool:
        """The checker found nothing and the harness did everything it set out to."""
        return (
            self.report is not None
            and self.report.ok
            and not self.harness_errors
            and self.quiet
            and not self.js_store
        )

    def fault_kinds(self) -> set[str]:
        """The kinds of fault injected."""
        return {fault.kind for fault in self.faults}

    def summary(self) -> str:
        """Figures of the run (no log tails)."""
        faults = Counter(fault.kind for fault in self.faults)
        timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.timings.items())
        parts = [
            f"seed {self.config.seed} (FLASHWIRE_MODEL_SEED={self.config.seed})",
            f"{self.config.nodes} nodes, {self.config.workers} workers, {self.config.ws_readers} WebSocket + "
            f"{self.config.sse_readers} SSE readers, {self.config.js_readers} JavaScript client readers, "
            f"{self.config.editors} editors; {timings}",
            f"faults: {dict(faults)}; restarts after unplanned exits: workers {len(self.worker_revivals)}, "
            f"nodes {len(self.node_revivals)}",
            f"API attempts: {dict(self.api_attempts)}",
            f"connection ends: {dict(sorted(self.connection_ends.items()))}",
            f"quiet reached: {self.quiet}",
            self.report.summary() if self.report is not None else "no report",
        ]
        if self.worker_revivals:
            parts.append("worker exits: " + "; ".join(self.worker_revivals[:5]))
        if self.node_revivals:
            parts.append("node exits: " + "; ".join(self.node_revivals[:5]))
        if self.harness_errors:
            parts.append("harness errors: " + "; ".join(self.harness_errors[:10]))
        if self.js_store:
            parts.append("JavaScript client stores: " + "; ".join(self.js_store[:10]))
        if self.notes:
            parts.append("notes: " + "; ".join(self.notes[:10]))
        return "\n".join(parts)

    def failure_text(self, tail_lines: int = 15) -> str:
        """The summary plus the tails of every process log."""
        tails = [
            f"--- {name} (last {tail_lines} lines)\n" + "\n".join(text.splitlines()[-tail_lines:])
            for name, text in self.log_tails.items()
        ]
        return self.summary() + "\n" + "\n".join(tails)


# -- processes -------------------------------------------------------------------------------


class Cluster:
    """Redis, service nodes and workers of one run; restarts whatever dies unplanned."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.redis = RedisProcess(config.work_dir / "redis")
        self.keys = Keys("fw")
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "FLASHWIRE_HEARTBEAT_S": str(config.heartbeat_s),
            "FLASHWIRE_CLAIM_IDLE_MS": "1000",
            # Nothing trimmed during a run, so no cursor ever falls out of the retained log.
            "FLASHWIRE_TICKER_RETENTION": "1000000",
            "PYTHONUNBUFFERED": "1",
            # Editors post as fast as they can with one token each: no rate limit in the way.
            **UNLIMITED_RATES,
            # Every reader connects from 127.0.0.1, and a killed node's readers all move to one
            # node: the per-address cap must hold them all twice over (a dropped connection may
            # count for a moment after its reader is back), and the socket cap them and the
            # editors' and checks' requests.
            "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT": str(2 * config.readers),
            "FLASHWIRE_MAX_SOCKETS": str(max(19_000, config.readers + 1_000)),
        }
        self.env.pop("FLASHWIRE_DATA_DIR", None)
        self.nodes: list[ServiceNode] = []
        self.workers: list[ManagedProcess] = []
        self._down: set[Path] = set()  # log paths of processes taken down on purpose right now
        self.started = time.monotonic()
        self.worker_revivals: list[str] = []
        self.node_revivals: list[str] = []
        self.faults_done: list[FaultRecord] = []
        self.progress: Callable[[str], None] | None = None
        # Readers per node port right now (set by the run), so that a kill always hits readers.
        self.load: Callable[[], Counter[str]] = Counter

    def busiest_node(self, rng: random.Random) -> ServiceNode:
        """The node holding the most readers: readers move only when dropped, so a node killed
        once is empty afterwards and killing it again would test nothing."""
        load = self.load()
        return max(self.nodes, key=lambda node: (load[str(node.port)], rng.random()))

    def elapsed(self) -> float:
        """Seconds since the cluster started."""
        return time.monotonic() - self.started

    async def start(self) -> None:
        """Redis, then workers and nodes; returns when every node answers /healthz."""
        await asyncio.to_thread(self.redis.start)
        self.started = time.monotonic()
        for index in range(self.config.workers):
            worker = ManagedProcess(
                [sys.executable, "-m", "flashwire.cli", "worker"],
                self.env,
                self.config.work_dir / f"worker-{index}.log",
            )
            self.workers.append(worker.start())
        for index in range(self.config.nodes):
            node = ServiceNode(self.env, self.config.work_dir / f"node-{index}.log", free_port())
            node.start()
            self.nodes.append(node)
        await asyncio.gather(*(self.wait_ready(node) for node in self.nodes))

    async def wait_ready(self, node: ServiceNode, limit_s: float = 40.0) -> None:
        """Poll /healthz without blocking the event loop (readers keep reading meanwhile)."""
        deadline = time.monotonic() + limit_s
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not node.alive():
                    raise HarnessError(f"node {node.port} exited while starting:\n{_tail(node.log(), 20)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{node.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise HarnessError(f"node {node.port} not ready after {limit_s}s:\n{_tail(node.log(), 20)}")

    def pick_port(self, rng: random.Random) -> int | None:
        """A random node that is running (it may still be starting: clients must cope)."""
        ports = [node.port for node in self.nodes if node.log_path not in self._down and node.alive()]
        return rng.choice(ports) if ports else None

    async def fault(self, kind: str, rng: random.Random) -> FaultRecord:
        """SIGKILL one process of `kind` and start it again (same port, same data)."""
        at = self.elapsed()
        if kind == "node":
            target = await self._node_fault(self.busiest_node(rng))
        elif kind == "worker":
            target = await self._worker_fault(rng.choice(self.workers))
        elif kind == "redis":
            target = await self._redis_fault(rng)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        record = FaultRecord(at, kind, target, self.elapsed() - at)
        self.faults_done.append(record)
        if self.progress is not None:
            self.progress(f"{at:7.1f}s: fault {kind}: {target} SIGKILLed, back after {record.down_s:.1f}s")
        return record

    async def _node_fault(self, node: ServiceNode) -> str:
        self._down.add(node.log_path)
        try:
            node.kill()
            await asyncio.sleep(self.config.node_down_s)
            node.start()
            await self.wait_ready(node)
        finally:
            self._down.discard(node.log_path)
        return f"node :{node.port}"

    async def _worker_fault(self, worker: ManagedProcess) -> str:
        self._down.add(worker.log_path)
        try:
            worker.kill()
            await asyncio.sleep(self.config.worker_down_s)
            worker.start()
        finally:
            self._down.discard(worker.log_path)
        return worker.log_path.stem

    async def _redis_fault(self, rng: random.Random) -> str:
        """Redis SIGKILLed and started again on its append-only file. A node is killed too while
        Redis is down: its readers reconnect to the others during the outage (they must be
        refused, not half-served), and it starts again without Redis."""
        self.redis.kill()
        await asyncio.sleep(self.config.redis_down_s / 3)
        node = self.busiest_node(rng) if self.config.node_kill_in_redis_outage else None
        if node is not None:
            self._down.add(node.log_path)
            node.kill()
            node.start()
        try:
            await asyncio.sleep(self.config.redis_down_s * 2 / 3)
            await asyncio.to_thread(self.redis.start, 30.0)
            if node is not None:
                await self.wait_ready(node)
        finally:
            if node is not None:
                self._down.discard(node.log_path)
        return f"redis :{self.redis.port}" + (f" + node :{node.port}" if node is not None else "")

    async def supervise(self) -> None:
        """Restart any worker or node that exited on its own, and note that it had to."""
        while True:
            for worker in self.workers:
                if worker.log_path not in self._down and not worker.alive():
                    code = worker.process.returncode if worker.process is not None else None
                    why = _last_error(worker.log())
                    self.worker_revivals.append(
                        f"{self.elapsed():.1f}s {worker.log_path.stem} exit {code}: {why}"
                    )
                    worker.start()
            for node in self.nodes:
                if node.log_path not in self._down and not node.alive():
                    code = node.process.returncode if node.process is not None else None
                    self.node_revivals.append(
                        f"{self.elapsed():.1f}s node :{node.port} exit {code}: {_last_error(node.log())}"
                    )
                    node.start()
            await asyncio.sleep(0.25)

    def redis_client(self) -> Redis:
        """A client of the run's Redis (the caller closes it)."""
        return Redis.from_url(self.redis.url, socket_timeout=10)

    async def editor_tokens(self, count: int) -> list[str]:
        """One chief token per editor task (retracting needs a chief), for every edition."""
        redis = self.redis_client()
        try:
            store = TokenStore(redis, self.keys)
            return [
                (await store.create(name=f"desk-{index}", role="chief", editions=list(EDITIONS)))[0]
                for index in range(count)
            ]
        finally:
            await redis.aclose()

    def close(self) -> None:
        """Stop everything this run started (by its own process handles)."""
        for process in [*self.nodes, *self.workers]:
            process.terminate(timeout_s=5)
        self.redis.kill()

    def log_tails(self) -> dict[str, str]:
        """Each process log (and redis.log), for the failure report."""
        logs = {process.log_path.name: process.log() for process in [*self.nodes, *self.workers]}
        redis_log = self.redis.data_dir / "redis.log"
        logs["redis.log"] = redis_log.read_text(errors="replace") if redis_log.exists() else ""
        return logs


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _last_error(log: str) -> str:
    """The last line of a log that names an error, for a one-line account of an exit."""
    for line in reversed(log.splitlines()):
        if "Error" in line or "error" in line:
            return line.strip()[:200]
    return _tail(log, 1)[:200]


# -- editors ---------------------------------------------------------------------------------


@dataclass
class _OwnedLine:
    line_id: str
    edition: str
    number: int  # the editor's count of its posts: named in every version's text
    version: int


class Editor:
    """One desk editor: posts, corrects and retracts its own lines, one action at a time.

    A line belongs to one editor, so actions on a line are never concurrent; each request is
    retried with the same Idempotency-Key until it is answered 201, so every action ends
    acknowledged (or the harness reports that it could not).
    """

    def __init__(
        self,
        index: int,
        token: str,
        cluster: Cluster,
        client: httpx.AsyncClient,
        rng: random.Random,
        acks: list[Action],
        attempts: Counter[str],
    ) -> None:
        self.name = f"d{index}"
        self.token = token
        self.cluster = cluster
        self.config = cluster.config
        self.client = client
        self.rng = rng
        self.acks = acks
        self.attempts = attempts
        self.lines: dict[str, _OwnedLine] = {}
        self.posted = 0

    def _text(self, edition: str, number: int, version: int) -> str:
        return f"{self.rng.choice(HEADLINES[edition])} ({self.name}.{number} v{version})"

    def _topics(self) -> tuple[str, ...]:
        count = self.rng.choices((0, 1, 2, 3), (0.1, 0.4, 0.35, 0.15))[0]
        return tuple(self.rng.sample(TOPICS, count))

    def _urgency(self) -> str:
        return self.rng.choices(URGENCIES, (0.15, 0.35, 0.5))[0]

    async def seed(self, count: int) -> None:
        """Post `count` lines to the seed edition before readers connect."""
        for _ in range(count):
            await self.post(self.config.seed_edition)

    async def edit(self, until: float) -> None:
        """Random actions until the monotonic time `until`."""
        config = self.config
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(*config.action_pause_s))
            full = config.max_live_per_editor is not None and len(self.lines) >= config.max_live_per_editor
            roll = self.rng.random()
            if not self.lines or (roll < config.post_share and not full):
                await self.post(self.rng.choice(EDITIONS))
            elif full or roll > 1 - config.retract_share:
                await self.retract(self.rng.choice(list(self.lines.values())))
            else:
                await self.correct(self.rng.choice(list(self.lines.values())))

    async def post(self, edition: str) -> None:
        self.posted += 1
        body = {
            "edition": edition,
            "text": self._text(edition, self.posted, 1),
            "topics": list(self._topics()),
            "urgency": self._urgency(),
        }
        answer = await self._submit("/api/v1/lines", body)
        line_id = str(answer["id"])
        self.lines[line_id] = _OwnedLine(line_id, edition, self.posted, 1)
        self.acks.append(
            Action(
                desk_id=str(answer["desk_id"]),
                kind="post",
                line_id=line_id,
                edition=edition,
                text=str(body["text"]),
                topics=tuple(body["topics"]),
                urgency=str(body["urgency"]),
                published_at=str(answer["accepted_at"]),
            )
        )

    async def correct(self, line: _OwnedLine) -> None:
        """A new text, and often new topics or urgency: the line moves into and out of filters."""
        body: dict[str, Any] = {"text": self._text(line.edition, line.number, line.version + 1)}
        if self.rng.random() < 0.5:
            body["topics"] = list(self._topics())
        if self.rng.random() < 0.4:
            body["urgency"] = self._urgency()
        answer = await self._submit(f"/api/v1/lines/{line.line_id}/corrections", body)
        line.version += 1
        self.acks.append(
            Action(
                desk_id=str(answer["desk_id"]),
                kind="correct",
                line_id=line.line_id,
                edition=line.edition,
                text=str(body["text"]),
                topics=tuple(body["topics"]) if "topics" in body else None,
                urgency=str(body["urgency"]) if "urgency" in body else None,
            )
        )

    async def retract(self, line: _OwnedLine) -> None:
        answer = await self._submit(f"/api/v1/lines/{line.line_id}/retraction", {"reason": "model run"})
        del self.lines[line.line_id]
        self.acks.append(
            Action(
                desk_id=str(answer["desk_id"]),
                kind="retract",
                line_id=line.line_id,
                edition=line.edition,
                note="model run",
            )
        )

    async def _submit(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST until 201 with one Idempotency-Key (503s and dropped connections happen in faults)."""
        content = orjson.dumps(body)
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": f"{self.name}-{uuid.UUID(int=self.rng.getrandbits(128)).hex}",
            "Content-Type": "application/json",
        }
        deadline = time.monotonic() + self.config.action_deadline_s
        attempt = 0
        while True:
            port = self.cluster.pick_port(self.rng)
            if port is not None:
                try:
                    response = await self.client.post(
                        f"http://127.0.0.1:{port}{path}", content=content, headers=headers
                    )
                except httpx.TransportError as exc:
                    self.attempts[type(exc).__name__] += 1
                else:
                    self.attempts[str(response.status_code)] += 1
                    if response.status_code == 201:
                        answer: dict[str, Any] = response.json()
                        return answer
                    if response.status_code not in (500, 502, 503, 504):
                        raise HarnessError(
                            f"{path} {body} answered {response.status_code}: {response.text[:300]}"
                        )
            attempt += 1
            if time.monotonic() > deadline:
                raise HarnessError(f"{path} not acknowledged within {self.config.action_deadline_s}s")
            await asyncio.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)) * self.rng.uniform(0.5, 1.0))


# -- readers ---------------------------------------------------------------------------------


def random_filter(rng: random.Random) -> ReaderFilter:
    """1-3 editions; often no topic filter, else 1-3 topics; any minimum urgency."""
    editions = tuple(rng.sample(EDITIONS, rng.choice((1, 1, 2, 2, 3))))
    topics = frozenset() if rng.random() < 0.55 else frozenset(rng.sample(TOPICS, rng.randint(1, 3)))
    return ReaderFilter(editions, topics, rng.choices(URGENCIES[::-1], (0.5, 0.3, 0.2))[0])


class SseParser:
    """The event-stream parsing of the HTML standard, as a browser's EventSource does it."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[bytes, str | None]]:
        """Complete events in `chunk`: (data, the event's id field or None)."""
        self._buffer += chunk
        out: list[tuple[bytes, str | None]] = []
        while True:
            cut = min((i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0), default=-1)
            if cut < 0 or (self._buffer[cut : cut + 1] == b"\r" and cut + 1 == len(self._buffer)):
                return out  # no whole line yet (a trailing CR may be the first half of CRLF)
            line = self._buffer[:cut]
            skip = 2 if self._buffer[cut : cut + 2] == b"\r\n" else 1
            self._buffer = self._buffer[cut + skip :]
            if not line:
                if self._data or self._id is not None:
                    out.append((b"\n".join(self._data), self._id))
                self._data, self._id = [], None
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode()


class _Reader:
    """A reader that records every message raw, per connection, and reconnects on any drop."""

    transport = ""

    def __init__(self, name: str, flt: ReaderFilter, cluster: Cluster, rng: random.Random) -> None:
        self.record = ReaderRecord(name, self.transport, flt)
        self.cluster = cluster
        self.config = cluster.config
        self.rng = rng
        self.last_cursor: dict[str, str] = {}
        self.heartbeat_s = 15.0
        self.attempt = 0
        self.ready = asyncio.Event()
        # Checked by every loop: a cancellation alone is not enough on Python 3.11, whose
        # wait_for can swallow one when the awaited receive completes at the same moment.
        self.stopped = False

    def _query(self, since: dict[str, str] | None = None) -> dict[str, str]:
        flt = self.record.filter
        query = {"editions": ",".join(flt.editions), "min_urgency": flt.min_urgency}
        if flt.topics:
            query["topics"] = ",".join(sorted(flt.topics))
        if since:
            query["since"] = ",".join(f"{edition}:{cursor}" for edition, cursor in since.items())
        return query

    def _note(self, connection: Connection, raw: bytes, sse_id: str | None) -> None:
        connection.messages.append((raw, sse_id))
        if not raw:
            return
        try:
            message = orjson.loads(raw)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if kind == "hello":
            self.heartbeat_s = float(message.get("heartbeat_s", 15.0))
        elif kind != "subscribed":
            self.attempt = 0  # the catch-up was delivered (contract: hello/subscribed never reset it)
        if kind in EVENT_TYPES:
            edition, cursor = message.get("edition"), message.get("cursor")
            if isinstance(edition, str) and isinstance(cursor, str):
                self.last_cursor[edition] = cursor
                if not self.ready.is_set() and all(
                    e in self.last_cursor for e in self.record.filter.editions
                ):
                    self.ready.set()

    def reached(self, targets: dict[str, tuple[int, int] | None]) -> bool:
        """Has the reader got as far as each edition's last selected event (or a snapshot)?"""
        for edition, target in targets.items():
            cursor = self.last_cursor.get(edition)
            if cursor is None or (target is not None and cursor_key(cursor) < target):
                return False
        return True

    async def _backoff(self, refused: bool) -> None:
        self.attempt += 1
        delay = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (self.attempt - 1))
        if refused:
            delay = max(delay, self.config.refusal_delay_s)
        await asyncio.sleep(self.rng.uniform(delay / 2, delay))

    async def run(self) -> None:
        """Connect, record, reconnect, until stopped."""
        while not self.stopped:
            port = self.cluster.pick_port(self.rng)
            if port is None:
                await asyncio.sleep(0.2)
                continue
            refused = await self._session(port)
            await self._backoff(refused)

    async def _session(self, port: int) -> bool:
        raise NotImplementedError


class WsReader(_Reader):
    """A WebSocket reader resuming with `since=` the last cursor it received of each edition."""

    transport = "ws"

    async def _session(self, port: int) -> bool:
        editions = self.record.filter.editions
        since = {edition: self.last_cursor[edition] for edition in editions if edition in self.last_cursor}
        connection = Connection("ws", str(port), resume=dict(since))
        self.record.connections.append(connection)
        url = f"ws://127.0.0.1:{port}/ws?{urlencode(self._query(since))}"
        try:
            async with connect(
                url, compression=None, max_size=2**24, open_timeout=5, close_timeout=1, ping_interval=None
            ) as ws:
                while not self.stopped:
                    # Dead-connection rule: nothing at all for 2.5 x heartbeat_s.
                    async with asyncio.timeout(2.5 * self.heartbeat_s):
                        raw = await ws.recv(decode=False)
                    self._note(connection, raw if isinstance(raw, bytes) else raw.encode(), None)
        except ConnectionClosed as closed:
            connection.close_code = closed.rcvd.code if closed.rcvd is not None else 1006
            connection.close_reason = closed.rcvd.reason if closed.rcvd is not None else ""
        except InvalidStatus as exc:
            connection.http_status = exc.response.status_code
        except TimeoutError:
            connection.error = "timeout"
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            connection.error = type(exc).__name__
        return connection.close_code == 1013 or connection.http_status == 503


class SseReader(_Reader):
    """An SSE reader that behaves as a browser's EventSource: the same URL every time, and the
    last `id` it received sent back as Last-Event-ID (never `since`)."""

    transport = "sse"

    def __init__(
        self, name: str, flt: ReaderFilter, cluster: Cluster, rng: random.Random, client: httpx.AsyncClient
    ) -> None:
        super().__init__(name, flt, cluster, rng)
        self.client = client
        self.last_event_id: str | None = None

    async def _session(self, port: int) -> bool:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        resume: dict[str, str] = {}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
            with contextlib.suppress(ValueError):
                resume = parse_cursor_set(self.last_event_id)
        connection = Connection("sse", str(port), resume=resume)
        self.record.connections.append(connection)
        timeout = httpx.Timeout(5.0, read=2.5 * self.config.heartbeat_s)
        try:
            async with self.client.stream(
                "GET", f"http://127.0.0.1:{port}/sse", params=self._query(), headers=headers, timeout=timeout
            ) as response:
                connection.http_status = response.status_code
                if response.status_code != 200:
                    connection.error = (await response.aread())[:200].decode(errors="replace")
                    return response.status_code == 503
                parser = SseParser()
                async for chunk in response.aiter_raw():
                    if self.stopped:
                        break
                    for data, event_id in parser.feed(chunk):
                        if event_id is not None:
                            self.last_event_id = event_id or None  # an empty id clears it
                        self._note(connection, data, event_id)
                connection.error = "stream ended"
        except httpx.HTTPError as exc:
            connection.error = type(exc).__name__
        return False


# -- the run ---------------------------------------------------------------------------------


async def _fault_schedule(cluster: Cluster, rng: random.Random, edit_until: float) -> None:
    """The configured faults, or a random one every `fault_every_s` (each kind once per round);
    the cluster keeps the record of each."""
    config = cluster.config
    if config.fault_every_s is None:
        start = time.monotonic()
        for fraction, kind in config.faults:
            await asyncio.sleep(max(0.0, start + fraction * config.edit_s - time.monotonic()))
            await cluster.fault(kind, rng)
        return
    kinds: list[str] = []
    while True:
        wait_s = config.fault_every_s * rng.uniform(0.7, 1.3)
        if time.monotonic() + wait_s > edit_until - config.fault_every_s / 2:
            return
        await asyncio.sleep(wait_s)
        if not kinds:
            kinds = list(FAULT_KINDS)
            rng.shuffle(kinds)
        await cluster.fault(kinds.pop(), rng)


async def _read_tickers(redis: Redis, keys: Keys) -> dict[str, list[TickerEvent]]:
    tickers: dict[str, list[TickerEvent]] = {}
    for edition in EDITIONS:
        events: list[TickerEvent] = []
        start = "-"
        while True:
            page = await redis.xrange(keys.ticker(edition), min=start, max="+", count=5000)
            for entry_id, fields in page:
                events.append(event_from_entry(entry_id.decode(), fields[b"t"].decode(), fields[b"d"]))
            if len(page) < 5000:
                break
            start = f"({page[-1][0].decode()}"
        tickers[edition] = events
    return tickers


async def _wait_applied(cluster: Cluster, actions: Sequence[Action], deadline: float) -> bool:
    """Until the workers have applied the last acknowledged action (the shared desk cursor)."""
    if not actions:
        return True
    last = cursor_key(desk_order(actions)[-1].desk_id)
    redis = cluster.redis_client()
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                applied = await redis.get(cluster.keys.desk_applied)
                if applied is not None and cursor_key(applied.decode()) >= last:
                    return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await redis.aclose()


async def _wait_delivered(
    readers: Sequence[_Reader], timelines: dict[str, Timeline], deadline: float
) -> bool:
    """Until every reader has reached the last event its filter selects in each edition."""
    targets = [
        (
            reader,
            {e: timelines[e].selection(reader.record.filter).last_key for e in reader.record.filter.editions},
        )
        for reader in readers
    ]
    while time.monotonic() < deadline:
        if all(reader.reached(target) for reader, target in targets):
            return True
        await asyncio.sleep(0.2)
    return False


def _connection_ends(records: Sequence[ReaderRecord]) -> Counter[str]:
    """How connections ended, per transport (the last one of each reader is our own stop)."""
    ends: Counter[str] = Counter()
    for record in records:
        for connection in record.connections[:-1]:
            subscribed = any(b'"type":"subscribed"' in raw for raw, _ in connection.messages[:2])
            if connection.close_code is not None:
                end = f"close {connection.close_code}" + ("" if subscribed else " before subscribed")
            elif connection.http_status not in (None, 200):
                end = f"http {connection.http_status}"
            else:
                end = connection.error or "ended"
            ends[f"{record.transport} {end}"] += 1
    return ends


async def _stop(
    readers: Sequence[_Reader], tasks: list[asyncio.Task[None]], limit_s: float = 15.0
) -> list[str]:
    """Stop every reader and task: flag, cancel, and cancel again while any is left (bounded).
    Returns a note for each task that would not stop, with where it was waiting."""
    for reader in readers:
        reader.stopped = True
    deadline = time.monotonic() + limit_s
    pending = [task for task in tasks if not task.done()]
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so that asyncio does not log it at exit
    return [f"task did not stop: {task.get_stack(limit=3)}" for task in pending[:5]]


async def _report_progress(
    progress: Callable[[str], None], cluster: Cluster, acks: list[Action], readers: Sequence[_Reader]
) -> None:
    """Every 30 s: what a long run has done so far."""
    while True:
        await asyncio.sleep(30)
        messages = sum(len(c.messages) for r in readers for c in r.record.connections)
        connections = sum(len(r.record.connections) for r in readers)
        progress(
            f"{cluster.elapsed():7.1f}s: {len(acks)} actions acknowledged, {messages} messages on "
            f"{connections} connections, {len(cluster.faults_done)} faults, "
            f"{len(cluster.worker_revivals)} unplanned worker exits"
        )


async def run_fault_model(config: RunConfig, progress: Callable[[str], None] | None = None) -> RunOutcome:
    """Run the whole scenario and check it; see the module docstring. `progress`, if given, is
    told of each fault and, every 30 s, of the figures so far."""
    # Here, not at the top: tests/js_readers.py builds on this module's reader and cluster.
    from tests.js_readers import JsFleet, JsReader, store_mismatches

    outcome = RunOutcome(config)
    rng = random.Random(config.seed)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(config)
    cluster.progress = progress
    cluster.load = lambda: Counter(r.record.connections[-1].node for r in readers if r.record.connections)
    acks: list[Action] = []
    readers: list[_Reader] = []
    tickers: dict[str, list[TickerEvent]] = {}
    timelines: dict[str, Timeline] = {}
    fleet: JsFleet | None = None
    began = time.monotonic()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    try:
        await cluster.start()
        outcome.timings["start"] = time.monotonic() - began
        tokens = await cluster.editor_tokens(config.editors)
        async with (
            httpx.AsyncClient(timeout=config.request_timeout_s) as api,
            httpx.AsyncClient(limits=limits) as sse_client,
        ):
            editors = [
                Editor(i, token, cluster, api, random.Random(rng.getrandbits(64)), acks, outcome.api_attempts)
                for i, token in enumerate(tokens)
            ]
            mark = time.monotonic()
            await asyncio.gather(*(editor.seed(config.seed_lines_per_editor) for editor in editors))
            outcome.timings["seed"] = time.monotonic() - mark
            for index in range(config.ws_readers + config.sse_readers):
                reader_rng = random.Random(rng.getrandbits(64))
                flt = random_filter(reader_rng)
                if index < config.ws_readers:
                    readers.append(WsReader(f"ws{index}", flt, cluster, reader_rng))
                else:
                    readers.append(SseReader(f"sse{index}", flt, cluster, reader_rng, sse_client))
            rng.shuffle(readers)
            # After the shuffle, from the run's random numbers only when there are any: a seed without
            # JavaScript readers replays as it did before they existed.
            js_readers = [
                JsReader(
                    f"js{index}",
                    random_filter(r),
                    cluster,
                    r,
                    "sse" if r.random() < config.js_sse_share else "auto",
                )
                for index, r in ((i, random.Random(rng.getrandbits(64))) for i in range(config.js_readers))
            ]
            tasks: list[asyncio.Task[None]] = []
            supervisor = asyncio.create_task(cluster.supervise())
            if progress is not None:
                tasks.append(asyncio.create_task(_report_progress(progress, cluster, acks, readers)))
            try:
                mark = time.monotonic()
                for start in range(0, len(readers), config.reader_batch):
                    batch = readers[start : start + config.reader_batch]
                    tasks += [asyncio.create_task(reader.run()) for reader in batch]
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in batch)), 10)
                if js_readers:
                    readers += js_readers
                    fleet = JsFleet(js_readers, cluster)
                    await fleet.start()
                    assert fleet.task is not None
                    tasks += [fleet.task, *(asyncio.create_task(reader.run()) for reader in js_readers)]
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in js_readers)), 20)
                outcome.timings["readers"] = time.monotonic() - mark
                mark = time.monotonic()
                edit_until = mark + config.edit_s
                faults = asyncio.create_task(_fault_schedule(cluster, rng, edit_until))
                results = await asyncio.gather(*(e.edit(edit_until) for e in editors), return_exceptions=True)
                outcome.harness_errors += [repr(r) for r in results if isinstance(r, BaseException)]
                try:
                    await faults
                except HarnessError as exc:
                    outcome.harness_errors.append(f"fault: {exc}")
                outcome.faults = list(cluster.faults_done)
                outcome.timings["edit"] = time.monotonic() - mark
                mark = time.monotonic()
                deadline = mark + config.quiet_timeout_s
                if not await _wait_applied(cluster, acks, deadline):
                    outcome.harness_errors.append(
                        "the workers did not apply every acknowledged action in time"
                    )
                redis = cluster.redis_client()
                try:
                    tickers = await _read_tickers(redis, cluster.keys)
                finally:
                    await redis.aclose()
                timelines.update((edition, Timeline(edition, events)) for edition, events in tickers.items())
                outcome.quiet = await _wait_delivered(readers, timelines, deadline)
                await asyncio.sleep(config.grace_s)  # anything late (a duplicate) still arrives
                outcome.timings["quiet"] = time.monotonic() - mark
            finally:
                if fleet is not None:
                    await fleet.stop()
                    outcome.notes += fleet.errors[:10]
                outcome.notes += await _stop(readers, [*tasks, supervisor])
    finally:
        cluster.close()
        outcome.worker_revivals = cluster.worker_revivals
        outcome.node_revivals = cluster.node_revivals
        outcome.log_tails = {name: _tail(text, 60) for name, text in cluster.log_tails().items()}
    mark = time.monotonic()
    records = outcome.records = [reader.record for reader in readers]
    outcome.actions = desk_order(acks)
    outcome.connection_ends = _connection_ends(records)
    outcome.report = check(outcome.actions, tickers, records, snapshot_max_lines=config.snapshot_max_lines)
    if fleet is not None:
        outcome.js_store = store_mismatches(list(fleet.readers.values()), timelines)
    outcome.timings["check"] = time.monotonic() - mark
    outcome.timings["total"] = time.monotonic() - began
    return outcome


def reader_events(reader: _Reader) -> list[dict[str, Any]]:
    """The snapshots and events `reader` received over all its connections, in arrival order."""
    messages = [orjson.loads(raw) for c in reader.record.connections for raw, _ in c.messages if raw]
    return [m for m in messages if m.get("type") in ("snapshot", "line", "update", "retract")]


def assert_once_and_in_order(reader: _Reader, posted: Sequence[str] = ()) -> None:
    """What a resuming reader must show after any fault: no reset snapshot, no line twice, cursors
    strictly increasing; and the lines of `posted` (ids), if given, in that order."""
    events = reader_events(reader)
    name = reader.record.name
    assert not [e for e in events if e["type"] == "snapshot" and e["reset"]], name
    lines = [e["line"]["id"] for e in events if e["type"] == "line"]
    assert len(lines) == len(set(lines)), f"{name} got a line twice"
    if posted:
        assert [line for line in lines if line in set(posted)] == list(posted), name
    cursors = [cursor_key(e["cursor"]) for e in events if e["type"] != "snapshot"]
    assert cursors == sorted(cursors) and len(cursors) == len(set(cursors)), name
