"""Burst benchmark: many lines posted at once by several editors to one node full of readers.

    python -m bench.burst                                   # 5,000 readers, 200 lines, 4 editors
    python -m bench.burst --subscribers 2000 --lines 100
    python -m bench.burst --filtered --lines 60 --interval 0.2   # random filters vs none, same node

Starts, with bench.fanout's helpers, a private redis-server, the worker and one `flashwire serve`;
opens N picows subscribers in load-generator processes (this module's `--loadgen` mode, built on
bench.loadgen_picows; 2,500 per process, at `nice 10`: in production the readers are on other
machines, here they must not starve the node they measure); then K editors (K tokens) post L lines through the real API: all at once
(L/K each, every POST in flight together) or, with --interval, one every that many seconds.
Reports the time from the first POST sent to the last POST answered, the last delivery after the
last answer, lost, duplicated or out-of-order deliveries, readers closed as slow (close frames the
subscribers saw, and the node's flashwire_slow_closed_total), and the node's CPU per delivery
(its CPU while idle taken off; with --filtered, also what posting the lines costs it, measured in
a first phase with no readers).

With --filtered the same node is measured three times in one run: first with no readers (what
posting costs the node), then every reader unfiltered, then
each with a random filter (one to three of the configured topics, a random min urgency) and every
line random topics (one to three) and urgency, so that about a sixth of the readers take a line;
each reader must get exactly the lines its filter takes.
Ratios within one run are what count: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from picows import WSMsgType, ws_connect

from bench import loadgen_picows
from bench.fanout import PER_PROCESS, PYTHON, Run, _wait_http
from flashwire.core.cursors import cursor_key
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.settings import Settings
from flashwire.dev.ports import free_port

URGENCIES = tuple(URGENCY_RANK)


# -- the load generator (a process of its own) -----------------------------------------------


class BurstSubscriber(loadgen_picows.Subscriber):
    """A picows subscriber that expects a given set of `bench <i>` lines, in ticker order, once each
    (posts sent together reach the ticker in any order: the order checked is the cursors')."""

    def __init__(self, stats: loadgen_picows.Stats, expected: set[int]) -> None:
        super().__init__(stats, False)
        self.expected = expected
        self.seen: set[int] = set()
        self.last_key: tuple[int, int] = (0, 0)
        self.unexpected = 0
        if not expected:
            self.finished = True
            stats.complete += 1

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            if not self.finished:
                self.stats.closed_early += 1
            transport.disconnect()
            return
        if kind != WSMsgType.TEXT:
            return
        now = time.time()
        payload = frame.get_payload_as_bytes()
        stats = self.stats
        if not self.is_ready:
            if b'"snapshot"' in payload[:40]:
                self.is_ready = True
                stats.ready += 1
                if stats.ready >= stats.expected_ready:
                    stats.all_ready.set()
            return
        if not payload.startswith(b'{"type":"line"'):
            return
        # Found by position, not parsed: a million frames a run, on the node's machine.
        text_at = payload.find(b'"text":"bench ')
        if text_at < 0:
            return
        index = int(payload[text_at + 14 : payload.index(b'"', text_at + 14)])
        cursor_at = payload.index(b'"cursor":"') + 10
        key = cursor_key(payload[cursor_at : payload.index(b'"', cursor_at)].decode())
        if key <= self.last_key:
            stats.out_of_order += 1
        self.last_key = key
        if index in self.seen:
            stats.duplicates += 1
            return
        self.seen.add(index)
        if index not in self.expected:
            self.unexpected += 1
            return
        stats.arrivals[index].append(now)
        if not self.finished and self.expected <= self.seen:
            self.finished = True
            stats.complete += 1
            if stats.complete >= stats.expected_complete:
                stats.done.set()


async def _loadgen(args: argparse.Namespace, plan: list[tuple[str, list[int]]]) -> None:
    """Connect the plan's subscribers, print "ready", wait for their lines, write a summary."""
    stats = loadgen_picows.Stats(args.lines)
    stats.expected_ready = stats.expected_complete = len(plan)
    semaphore = asyncio.Semaphore(200)
    subscribers: list[BurstSubscriber] = []
    transports: list[Any] = []

    async def open_one(query: str, expected: list[int]) -> None:
        async with semaphore:
            subscriber = BurstSubscriber(stats, set(expected))
            subscribers.append(subscriber)
            for attempt in range(5):
                try:
                    transport, _ = await ws_connect(
                        lambda: subscriber, f"{args.url}?{query}", websocket_handshake_timeout=30
                    )
                    transports.append(transport)
                    return
                except OSError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError("could not connect")

    await asyncio.gather(*(open_one(query, expected) for query, expected in plan))
    await asyncio.wait_for(stats.all_ready.wait(), 120)
    if stats.complete >= stats.expected_complete:
        stats.done.set()
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stats.done.wait(), args.timeout)
    except TimeoutError:
        pass
    # The parent reads the node's CPU now, then lets us go: closing thousands of connections is
    # not part of what is measured.
    print("complete", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    summary = {
        "arrivals": stats.arrivals,
        "lost": sum(len(s.expected - s.seen) for s in subscribers),
        "unexpected": sum(s.unexpected for s in subscribers),
        "duplicates": stats.duplicates,
        "out_of_order": stats.out_of_order,
        "closed": stats.closed_early,
    }
    Path(args.out).write_text(json.dumps(summary))  # noqa: ASYNC240 - once, after the measurement
    for transport in transports:
        transport.disconnect()
    print("done", flush=True)


# -- the benchmark ------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    subscribers: int
    posts_s: float
    last_after_posts_s: float
    line_last_median_ms: float
    line_last_max_ms: float
    deliveries: int
    lost: int
    duplicated: int
    closed: int
    slow_closed: int
    cpu_s: float
    frames: int = 0
    writes: int = -1


def _random_filter(rng: random.Random, topics: tuple[str, ...]) -> tuple[frozenset[str], int]:
    return frozenset(rng.sample(topics, rng.randint(1, 3))), rng.randint(0, 2)


def _plan(
    args: argparse.Namespace, filtered: bool, lines: list[tuple[list[str], str]]
) -> list[tuple[str, list[int]]]:
    """Per subscriber: its query and the line indices it must get."""
    if not filtered:
        return [("editions=en", list(range(args.lines)))] * args.subscribers
    rng = random.Random(args.seed)
    topics = Settings().topics
    plan = []
    for _ in range(args.subscribers):
        chosen, max_rank = _random_filter(rng, topics)
        query = f"editions=en&topics={','.join(sorted(chosen))}&min_urgency={URGENCIES[max_rank]}"
        expected = [
            i
            for i, (line_topics, urgency) in enumerate(lines)
            if URGENCY_RANK[urgency] <= max_rank and chosen.intersection(line_topics)
        ]
        plan.append((query, expected))
    return plan


def _lines(args: argparse.Namespace, filtered: bool) -> list[tuple[list[str], str]]:
    """Each line's topics and urgency (none and routine when unfiltered)."""
    if not filtered:
        return [([], "routine")] * args.lines
    rng = random.Random(args.seed + 1)
    topics = Settings().topics
    return [(rng.sample(topics, rng.randint(1, 3)), rng.choice(URGENCIES)) for _ in range(args.lines)]


async def _post_all(
    api: str, tokens: list[str], lines: list[tuple[list[str], str]], interval_s: float
) -> tuple[list[float], float, float]:
    """Post every line (line i by editor i % K): all at once, or one every `interval_s`.
    Returns when each was sent (time.time()), and when the first was sent and the last answered."""
    clients = [
        httpx.AsyncClient(
            base_url=api,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(max_connections=len(lines), max_keepalive_connections=len(lines)),
        )
        for token in tokens
    ]
    sent = [0.0] * len(lines)

    async def post(i: int) -> None:
        topics, urgency = lines[i]
        sent[i] = time.time()
        body = {"edition": "en", "text": f"bench {i}", "urgency": urgency, "topics": topics}
        (await clients[i % len(clients)].post("/api/v1/lines", json=body)).raise_for_status()

    try:
        started = time.time()
        if interval_s <= 0:
            await asyncio.gather(*(post(i) for i in range(len(lines))))
        else:
            pending = []
            for i in range(len(lines)):
                pending.append(asyncio.create_task(post(i)))
                await asyncio.sleep(max(0.0, started + (i + 1) * interval_s - time.time()))
            await asyncio.gather(*pending)
        return sent, started, time.time()
    finally:
        for client in clients:
            await client.aclose()


def _counters(api: str) -> dict[str, int]:
    """The node's flashwire_*_total counters (a node without one simply lacks it)."""
    text = httpx.get(f"{api}/metrics", timeout=5).text
    return {
        name: int(float(value))
        for line in text.splitlines()
        if line.startswith("flashwire_") and "_total " in line and "{" not in line
        for name, value in [line.split(" ", 1)]
    }


def _profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy on the node until stopped with SIGINT (raw collapsed stacks, bench.profile_summary)."""
    return subprocess.Popen(
        [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
         "--output", output, "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _measure(
    run: Run,
    args: argparse.Namespace,
    tokens: list[str],
    node: psutil.Process,
    port: int,
    kind: str,
    profile: str | None = None,
) -> Outcome:
    """One phase: `kind` is "unfiltered", "random filters" or "no readers" (what posting alone costs)."""
    tag = kind.replace(" ", "-")
    filtered = kind == "random filters"
    api = f"http://127.0.0.1:{port}"
    lines = _lines(args, filtered)
    plan = [] if kind == "no readers" else _plan(args, filtered, lines)
    loadgens = []
    for index, first in enumerate(range(0, len(plan), args.per_process)):
        plan_file = run.tmp / f"{tag}-plan-{index}.json"
        plan_file.write_text(json.dumps(plan[first : first + args.per_process]))
        out = run.tmp / f"{tag}-{index}.json"
        process = run.start(
            ["nice", "-n", str(args.nice), PYTHON, "-m", "bench.burst", "--loadgen", "--url", f"ws://127.0.0.1:{port}/ws", "--plan",
             str(plan_file), "--lines", str(args.lines), "--out", str(out), "--timeout", "120"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        loadgens.append((out, process))
    for _, process in loadgens:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("a load generator failed to connect its subscribers")
    # The node's CPU while idle (heartbeats, reach, readers online), taken off what follows.
    idle_from, idle_cpu = time.monotonic(), sum(node.cpu_times()[:2])
    time.sleep(2.0)
    before = _counters(api)
    cpu_before, started = sum(node.cpu_times()[:2]), time.monotonic()
    idle_per_s = (cpu_before - idle_cpu) / (started - idle_from)
    profiler = _profiler(node.pid, profile) if profile else None
    sent, first_sent, last_answered = asyncio.run(_post_all(api, tokens, lines, args.interval))
    for _, process in loadgens:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "complete":
            raise SystemExit("a load generator failed")
    if not loadgens:
        time.sleep(1.0)  # the node reads and dispatches the lines (to nobody)
    cpu_s = sum(node.cpu_times()[:2]) - cpu_before - idle_per_s * (time.monotonic() - started)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes what it has
        profiler.wait(60)
    for _, process in loadgens:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("close\n")
        process.stdin.flush()
        process.stdout.readline()
        process.wait(150)
    summaries = [json.loads(out.read_text()) for out, _ in loadgens]
    arrivals: list[list[float]] = [[] for _ in range(args.lines)]
    for summary in summaries:
        for i, times in enumerate(summary["arrivals"]):
            arrivals[i].extend(times)
    lasts = [(max(times) - sent[i]) * 1000 for i, times in enumerate(arrivals) if times]
    every = [t for times in arrivals for t in times]
    return Outcome(
        name=kind, subscribers=len(plan),
        posts_s=last_answered - first_sent, last_after_posts_s=(max(every) - last_answered) if every else float("nan"),
        line_last_median_ms=statistics.median(lasts) if lasts else float("nan"),
        line_last_max_ms=max(lasts) if lasts else float("nan"),
        deliveries=len(every), lost=sum(s["lost"] for s in summaries),
        duplicated=sum(s["duplicates"] + s["out_of_order"] + s["unexpected"] for s in summaries),
        closed=sum(s["closed"] for s in summaries), cpu_s=cpu_s, **_grown(before, _counters(api)),
    )  # fmt: skip


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Readers closed as slow, and frames and writes to readers (None: not counted by this node)."""
    grown = {name: after[name] - before.get(name, 0) for name in after}
    return {
        "slow_closed": grown.get("flashwire_slow_closed_total", 0),
        "frames": grown.get("flashwire_direct_frames_total", 0),
        "writes": grown.get("flashwire_direct_writes_total", -1),
    }


async def _make_tokens(run: Run, count: int) -> list[str]:
    from redis.asyncio import Redis

    from flashwire.core.keys import Keys
    from flashwire.service.tokens import TokenStore

    client = Redis.from_url(run.redis.url)
    try:
        store = TokenStore(client, Keys("fw"))
        return [
            (await store.create(name=f"editor {k}", role="editor", editions=["en"]))[0] for k in range(count)
        ]
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=5_000)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--editors", type=int, default=4, help="tokens the lines are posted with (K)")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between posts (0: all at once)")
    parser.add_argument("--filtered", action="store_true", help="then again with random filters")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--profile", help="py-spy the node while posting; raw collapsed stacks to this file")
    parser.add_argument("--per-process", type=int, default=2_500, help="subscribers per load generator")
    parser.add_argument(
        "--nice",
        type=int,
        default=10,
        help="niceness of the load generators (readers are elsewhere in production)",
    )
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.per_process = min(args.per_process, PER_PROCESS)  # the file-descriptor limit per process
    if args.loadgen:
        import uvloop

        uvloop.run(_loadgen(args, json.loads(Path(args.plan).read_text())))
        return
    command = "python -m bench.burst " + " ".join(sys.argv[1:])
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        run = Run(args, Path(tmp_name))
        try:
            run.start([PYTHON, "-m", "flashwire.cli", "worker"], stderr=subprocess.DEVNULL)
            port = free_port()
            service = run.start([PYTHON, "-m", "flashwire.cli", "serve", "--port", str(port)],
                                stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            tokens = asyncio.run(_make_tokens(run, args.editors))
            node = psutil.Process(service.pid)
            kinds = ["no readers", "unfiltered", *(["random filters"] if args.filtered else [])]
            for kind in kinds:
                profile = args.profile if kind == kinds[-1] else None
                outcomes.append(_measure(run, args, tokens, node, port, kind, profile))
        finally:
            run.close()
    print("\n".join(report(args, command, outcomes)))


def report(args: argparse.Namespace, command: str, outcomes: list[Outcome]) -> list[str]:
    lines = [
        f"### `{command}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.lines} lines by {args.editors} editors, "
        + ("all at once" if args.interval <= 0 else f"one every {args.interval} s"),
        "",
        "| readers | subscribers | first POST sent → last answered | last delivery after it | line POST→last "
        "(median / max) | deliveries | lost | duplicated | closed (seen / slow_closed) | node CPU per delivery (whole phase) "
        "| frames per write |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    posting = next((o.cpu_s for o in outcomes if o.name == "no readers"), 0.0)
    for o in outcomes:
        per = (o.cpu_s - posting) / o.deliveries * 1e6 if o.deliveries else float("nan")
        lines.append(
            f"| {o.name} | {o.subscribers:,} | {o.posts_s:.2f} s | {o.last_after_posts_s:.2f} s "
            f"| {o.line_last_median_ms:.1f} / {o.line_last_max_ms:.1f} ms | {o.deliveries:,} | {o.lost} "
            f"| {o.duplicated} | {o.closed} / {o.slow_closed} | {per:.2f} µs ({o.cpu_s:.1f} s) "
            f"| {f'{o.frames / o.writes:.1f}' if o.writes > 0 else '—'} |"
        )
    if len(outcomes) == 3 and all(o.deliveries for o in outcomes[1:]):  # with --filtered
        base, filt = outcomes[1:]
        ratio = ((filt.cpu_s - posting) / filt.deliveries) / ((base.cpu_s - posting) / base.deliveries)
        lines += [
            "",
            f"CPU per delivery, random filters / unfiltered: **{ratio:.2f}×**; slowest line to its last "
            f"matching reader {filt.line_last_max_ms / filt.line_last_median_ms:.2f}× the median",
        ]
    return lines


if __name__ == "__main__":
    main()
