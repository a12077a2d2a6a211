"""The JavaScript client (web/client/flashwire.js) as readers of the fault run (tests/fault_run.py).

One Node process (web/client/test/fault-reader.mjs) runs a `FlashwireClient` per reader, each
with every node of the cluster as its servers, and reports on stdout, one JSON object a line,
each connection it opens (transport, node, the `since` cursors it resumes from), every message
exactly as received (with its SSE id) and how each connection ended. `JsFleet` turns that into
the same `ReaderRecord`s the Python readers make, so tests/delivery_model.py checks the client
exactly as it checks them: no gap, no duplicate, no reorder, the right snapshots and resumes.
Unlike the Python readers, which reconnect with the harness's own loop, here the library decides
everything: when a connection is dead, how long to wait, which cursors to resume from, when to
fall back to SSE.

At the end each client also reports the lines it holds (`client.lines()`) and its cursors;
`store_mismatches` compares those lines with the model's live lines at the client's cursor, so
the library's own store is checked too, beside the checker's replay of the recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tests.conftest import ROOT
from tests.delivery_model import Connection, ReaderFilter, Timeline, cursor_key
from tests.fault_run import Cluster, _Reader

RUNNER = ROOT / "web" / "client" / "test" / "fault-reader.mjs"
# Largest stdout line the runner may write: a snapshot of a few hundred lines, JSON-escaped twice.
LINE_LIMIT_BYTES = 64 * 1024 * 1024


class JsReader(_Reader):
    """One FlashwireClient of the fleet; `transport` is the client's option ("auto" or "sse")."""

    def __init__(
        self, name: str, flt: ReaderFilter, cluster: Cluster, rng: random.Random, transport: str
    ) -> None:
        self.transport = f"js-{transport}"
        super().__init__(name, flt, cluster, rng)
        self.option = transport
        self.final_lines: dict[str, list[tuple[str, int]]] | None = None
        self.final_cursors: dict[str, str] = {}
        self.refusals: list[str] = []

    async def run(self) -> None:
        """The fleet's process does the work; this only lives as long as the reader."""
        await asyncio.Event().wait()

    def spec(self) -> dict[str, Any]:
        flt = self.record.filter
        return {
            "name": self.record.name,
            "editions": list(flt.editions),
            "topics": sorted(flt.topics),
            "min_urgency": flt.min_urgency,
            "transport": self.option,
        }


class JsFleet:
    """The Node process running every JsReader, and the task reading its reports."""

    def __init__(self, readers: Sequence[JsReader], cluster: Cluster) -> None:
        self.readers = {reader.record.name: reader for reader in readers}
        self.cluster = cluster
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.errors: list[str] = []

    async def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed (make test installs Debian's nodejs)")
        self.process = await asyncio.create_subprocess_exec(
            node,
            str(RUNNER),
            cwd=RUNNER.parent,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT_BYTES,
        )
        servers = [node.url for node in self.cluster.nodes]
        config = {"servers": servers, "readers": [reader.spec() for reader in self.readers.values()]}
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(config) + b"\n")
        await self.process.stdin.drain()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        current: dict[str, Connection] = {}
        async for raw_line in self.process.stdout:
            try:
                report = orjson.loads(raw_line)
            except orjson.JSONDecodeError:
                self.errors.append(f"runner said: {raw_line[:300].decode(errors='replace')}")
                continue
            kind = report.get("k")
            if kind == "done":
                self.done.set()
                continue
            reader = self.readers[report["r"]]
            if kind == "conn":
                port = str(report["server"]).rsplit(":", 1)[-1]
                connection = Connection(report["transport"], port, resume=dict(report["since"]))
                reader.record.connections.append(connection)
                current[reader.record.name] = connection
            elif kind == "msg":
                reader._note(current[reader.record.name], report["raw"].encode(), report["id"])
            elif kind == "end":
                connection = current[reader.record.name]
                connection.close_code = report["code"]
                connection.http_status = report["status"]
                connection.error = report["reason"]
                if report["code"] is not None:
                    connection.close_reason = report["reason"].partition(": ")[2]
            elif kind == "refused":
                reader.refusals.append(f"{report['code']}: {report['reason']}")
            elif kind == "final":
                reader.final_cursors = dict(report["cursors"])
                reader.final_lines = {
                    edition: [(str(line_id), int(version)) for line_id, version in lines]
                    for edition, lines in report["lines"].items()
                }
        self.done.set()

    async def stop(self, limit_s: float = 15.0) -> None:
        """Close every client, collect what each holds, and end the process."""
        process = self.process
        if process is None or process.stdin is None:
            return
        with contextlib.suppress(ConnectionError):
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), limit_s)
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def store_mismatches(readers: Sequence[JsReader], timelines: Mapping[str, Timeline]) -> list[str]:
    """Each client's lines (id and version; a set: the client orders lines by arrival, a snapshot by
    publication) against the model's live lines for its filter at the client's own cursor; and
    any client that stopped, or reported nothing."""
    problems: list[str] = []
    for reader in readers:
        name = reader.record.name
        problems += [f"{name} stopped: {refusal}" for refusal in reader.refusals]
        if reader.final_lines is None:
            problems.append(f"{name}: no final report")
            continue
        for edition in reader.record.filter.editions:
            cursor = reader.final_cursors.get(edition)
            if cursor is None:
                problems.append(f"{name} {edition}: no cursor at the end")
                continue
            expected = timelines[edition].snapshot_lines(cursor_key(cursor), reader.record.filter, 10**9)
            want = {(line.id, line.version) for line in expected}
            held = set(reader.final_lines.get(edition, []))
            if held != want:
                problems.append(
                    f"{name} {edition} at {cursor}: holds {len(held)} lines, the model {len(want)}; "
                    f"extra {sorted(held - want)[:3]}, missing {sorted(want - held)[:3]}"
                )
    return problems
