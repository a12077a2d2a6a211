"""Fan-out benchmark: Flashwire beside the reference limit, in one run, on loopback.

    python -m bench.fanout --subscribers 10000 --lines 50
    python -m bench.fanout --subscribers 30000 --services 2 --lines 20 --no-reference
    python -m bench.fanout --subscribers 10000 --stalled 0.1 --lines 50
    python -m bench.fanout --subscribers 10000 --workers 1,2 --lines 30 --no-reference
    python -m bench.fanout --subscribers 10000 --transport ws,sse --lines 10
    python -m bench.fanout --subscribers 5000 --filters random --seed 1 --lines 10 --no-reference
    python -m bench.fanout --subscribers 30000 --workers 2 --reference-processes 2 --lines 10

Starts a private redis-server, the worker, K `flashwire serve` processes and
the reference server (bench.reference: websockets' broadcast() on uvloop);
opens N subscribers from separate picows load-generator processes (at most
9,000 per process, for the 20,000 file-descriptor limit); posts L lines through
the real API, one every --interval seconds; and reports, per line, the time from
sending the POST to the first, median, 99th-percentile and last delivery, the
deliveries per second, lost and duplicated events, and the service's CPU time
and resident memory per connection. Then the same subscribers and lines
against the reference server. Ratios are what count: the machine is shared.

`--transport ws,sse` measures the same node set twice, WebSocket readers (picows) and then SSE
readers of /sse (bench.loadgen_sse), and reports SSE's figures as ratios to WebSocket's.
`--filters random --seed S` measures an unfiltered half and then a half where every reader has
its own random filter and every line random topics and urgency (bench.filters); each reader
checks it got exactly its matching lines, once, in order. When a run has several such halves,
each starts on a fresh node set of the same shape (same processes, same settings), so that
resident memory per idle connection is not skewed by what the previous half left in the heap,
and the lines are posted through one more node that holds no reader, so that the readers' nodes
spend their CPU on fan-out alone (CPU per delivery is compared between halves of different reach).
`--reference-processes N` runs the reference as N processes on one port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from bench.filters import matches, random_lines, reader_filters
from flashwire.core.settings import Settings
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess

PER_PROCESS = 9_000
PYTHON = sys.executable


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))


def _spawn(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=env, preexec_fn=_raise_fd_limit, text=True, **kwargs)  # type: ignore[call-overload]


def _wait_http(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


@dataclass
class Result:
    name: str
    subscribers: int
    first_ms: float
    median_ms: float
    p99_ms: float
    last_ms: float
    last_max_ms: float
    deliveries_per_s: float
    lost: int
    duplicated: int
    cpu_s: float | None = None
    rss_per_conn_kib: float | None = None
    connect_s: float = 0.0
    # Readers per process of a `serve --workers N` node, from its processes' readers-online counts.
    per_process: list[int] = field(default_factory=list)
    rss_after_mib: float | None = None
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    # Which half of the run this is: "flashwire" or "reference"; "ws" or "sse"; random filters or not.
    role: str = "flashwire"
    transport: str = "ws"
    filtered: bool = False
    deliveries: int = 0  # line arrivals counted, over every reader and line
    expected: int = 0  # arrivals due: readers whose filter matches, summed over the lines
    unexpected: int = 0  # lines a reader got that its filter does not match
    lasts_ms: list[float] = field(default_factory=list)  # POST→last reader, per line with a reader
    client_cpu_s: float = 0.0  # the load generators' CPU while the lines were posted and read

    @property
    def cpu_per_delivery_us(self) -> float | None:
        """Server CPU time per line arrival, µs: the cost of a delivery, whatever the reach."""
        if self.cpu_s is None or not self.deliveries:
            return None
        return self.cpu_s / self.deliveries * 1e6


def _pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Run:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.redis = RedisProcess(tmp / "redis", appendonly=False).start()
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "FLASHWIRE_MAX_CONNECTIONS": "19000",
            # Every subscriber comes from 127.0.0.1: no per-address cap in the way, and sockets for
            # the subscribers plus the benchmark's requests (within the 20,000 descriptors).
            "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT": "19000",
            "FLASHWIRE_MAX_SOCKETS": "19500",
            "FLASHWIRE_HEARTBEAT_S": "60",
            "PYTHONUNBUFFERED": "1",
            # One token posts every line: no rate limit in the way of the measurement.
            "FLASHWIRE_POST_RATE_LIMIT": "100000/second",
            # Every half of a run (and the reference, whose snapshot is empty) sends about the same
            # snapshot whatever the halves before it posted: one line at most.
            "FLASHWIRE_SNAPSHOT_MAX_LINES": "1",
        }
        self.processes: list[subprocess.Popen[str]] = []
        self.token = ""
        self.reconnects = 0
        self.storm_metrics_url = ""
        self.storm_report: dict[str, int] = {}

    def start(self, args: list[str], **kwargs: object) -> subprocess.Popen[str]:
        process = _spawn(args, self.env, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.redis.stop()

    async def make_token(self) -> None:
        from redis.asyncio import Redis

        from flashwire.core.keys import Keys
        from flashwire.service.tokens import TokenStore

        client = Redis.from_url(self.redis.url)
        self.token, _ = await TokenStore(client, Keys("fw")).create(
            name="bench", role="editor", editions=["en"]
        )
        await client.aclose()

    def measure(
        self,
        name: str,
        urls: list[str],
        api: str,
        watched: list[psutil.Process],
        tag: str,
        stalled: float,
        *,
        on_post: Callable[[int], None] | None = None,
        reconnect: bool = False,
        transport: str = "ws",
        filtered: bool = False,
        role: str = "flashwire",
    ) -> Result:
        """One half: N fresh readers of `urls` over `transport`, L lines posted to `api`.

        With `--seed`, lines carry the seed's random topics and urgency (bench.filters) and, if
        `filtered`, every reader its own random filter; `watched` are the server processes whose
        CPU and memory are counted.
        """
        args = self.args
        total = args.subscribers
        seed = args.seed if args.filters else None
        topics = list(Settings.from_env(self.env).topics)
        plan = random_lines(seed, args.lines, topics) if seed is not None else None
        if filtered and seed is not None and plan is not None:
            filters = reader_filters(seed, total, topics)
            due = [sum(1 for f in filters if matches(f, line)) for line in plan]
        else:
            due = [total - int(total * stalled)] * args.lines
        module = "bench.loadgen_sse" if transport == "sse" else "bench.loadgen_picows"
        filter_args = (
            ["--seed", str(seed), "--readers-total", str(total), "--topics", ",".join(topics)]
            if filtered and seed is not None else []
        )  # fmt: skip
        stalled_total = int(total * stalled)
        counts = [PER_PROCESS] * (total // PER_PROCESS) + (
            [total % PER_PROCESS] if total % PER_PROCESS else []
        )
        rss_before = sum(p.memory_info().rss for p in watched)
        loadgens = []
        started = time.monotonic()
        stalled_left = stalled_total
        first_reader = 0
        # Load generator i connects from 127.0.0.<i+1>: 30,000 readers of one port would need more than
        # the ~28,000 ephemeral ports one source address has towards it (`serve --workers 2`).
        for index, count in enumerate(counts):
            share = min(stalled_left, round(count * stalled))
            stalled_left -= share
            out = self.tmp / f"{tag}-{index}.json"
            offset = ["--first-reader", str(first_reader)] if filter_args else []
            first_reader += count
            loadgens.append((out, self.start(
                [PYTHON, "-m", module, "--urls", ",".join(urls), "--count", str(count),
                 "--lines", str(args.lines), "--stalled", str(share), "--out", str(out),
                 "--timeout", str(args.lines * args.interval + 60), *(["--reconnect"] if reconnect else []),
                 *filter_args, *offset, "--source", f"127.0.0.{index + 1}"],
                stdout=subprocess.PIPE,
            )))  # fmt: skip
        for _, process in loadgens:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a load generator failed to connect its subscribers")
        connect_s = time.monotonic() - started
        time.sleep(1.0)
        rss_idle = sum(p.memory_info().rss for p in watched)
        cpu_before = sum(sum(p.cpu_times()[:2]) for p in watched)
        sent: list[float] = []
        samples: list[tuple[float, float, int]] = []
        sampling = threading.Event()
        # Flashwire's /metrics on each readers' node (the reference has none): http://host:port/metrics.
        metric_urls = [f"http://{urlsplit(u).netloc}/metrics" for u in urls] if role == "flashwire" else []

        def sample() -> None:
            # Every 2 s: resident memory of the servers and frames queued in their outboxes.
            while watched and not sampling.wait(2.0):
                try:
                    rss = sum(p.memory_info().rss for p in watched) / 2**20
                    queued = 0
                    for url in metric_urls:
                        text = httpx.get(url, timeout=2).text
                        queued += next(int(float(line.split()[1])) for line in text.splitlines()
                                       if line.startswith("flashwire_outbox_frames "))  # fmt: skip
                    samples.append((time.monotonic(), rss, queued))
                except (psutil.Error, httpx.HTTPError, StopIteration):
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        profiler = None
        if args.profile and watched and tag != "reference":
            duration = max(1, int(args.lines * args.interval) - 1)
            profiler = subprocess.Popen(
                [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(watched[0].pid), "--format", "raw", "--rate", "200",
                 "--duration", str(duration), "--output", args.profile, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        with httpx.Client(
            base_url=api, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        ) as client:
            start = time.monotonic()
            for i in range(args.lines):
                body: dict[str, object] = {"edition": "en", "text": f"bench {i}"}
                if plan is not None:
                    body.update(topics=list(plan[i].topics), urgency=plan[i].urgency)
                sent.append(time.time())
                client.post("/api/v1/lines", json=body).raise_for_status()
                if on_post is not None:
                    on_post(i)
                # A steady rate: the next post is due `interval` after the previous one was due.
                time.sleep(max(0.0, start + (i + 1) * args.interval - time.monotonic()))
        for _, process in loadgens:
            assert process.stdout is not None
            process.stdout.readline()
            process.wait(120)
        sampling.set()
        sampler.join()
        if profiler is not None:
            profiler.wait(60)
        cpu_s = sum(sum(p.cpu_times()[:2]) for p in watched) - cpu_before
        summaries = [json.loads(out.read_text()) for out, _ in loadgens]
        arrivals: list[list[float]] = [[] for _ in range(args.lines)]
        duplicated = unexpected = 0
        client_cpu_s = sum(summary.get("cpu_s", 0.0) for summary in summaries)
        self.reconnects = sum(summary["reconnects"] for summary in summaries)
        for summary in summaries:
            duplicated += summary["duplicates"] + summary["out_of_order"]
            unexpected += summary.get("unexpected", 0)
            for i, times in enumerate(summary["arrivals"]):
                arrivals[i].extend(times)
        lost = sum(max(0, due[i] - len(times)) for i, times in enumerate(arrivals))
        firsts, medians, p99s, lasts, rates = [], [], [], [], []
        for i, times in enumerate(arrivals):
            if not times:
                continue
            delays = [t - sent[i] for t in times]
            firsts.append(min(delays))
            medians.append(statistics.median(delays))
            p99s.append(_pct(delays, 0.99))
            lasts.append(max(delays))
            spread = max(delays) - min(delays)
            rates.append(len(times) / spread if spread > 0 else float("nan"))
        ms = 1000.0
        rss_per_conn = (rss_idle - rss_before) / total / 1024 if watched else None
        return Result(
            name=name, subscribers=total,
            first_ms=statistics.median(firsts) * ms, median_ms=statistics.median(medians) * ms,
            p99_ms=statistics.median(p99s) * ms, last_ms=statistics.median(lasts) * ms, last_max_ms=max(lasts) * ms,
            deliveries_per_s=statistics.median([r for r in rates if r == r] or [0.0]),
            lost=lost, duplicated=duplicated, cpu_s=cpu_s if watched else None,
            rss_per_conn_kib=rss_per_conn, connect_s=connect_s, samples=samples,
            role=role, transport=transport, filtered=filtered, deliveries=sum(len(t) for t in arrivals),
            expected=sum(due), unexpected=unexpected, lasts_ms=[v * ms for v in lasts], client_cpu_s=client_cpu_s,
        )  # fmt: skip


def _readers_per_process(redis_url: str) -> list[int]:
    """Readers of `en` each live process publishes (service/reach.py), largest first."""
    import redis

    from flashwire.core.keys import Keys

    keys, client = Keys("fw"), redis.Redis.from_url(redis_url)
    try:
        counts = [
            client.hget(keys.readers(node.decode()), "en")
            for node in client.zrange(keys.readers_nodes, 0, -1)
        ]
        return sorted((int(count) for count in counts if count is not None), reverse=True)
    finally:
        client.close()


def _measure_workers(run: Run, count: int) -> Result:
    """One `serve --workers count` node on a port of its own: measured like one service, then stopped."""
    port = free_port()
    node = run.start([PYTHON, "-m", "flashwire.cli", "serve", "--port", str(port), "--workers", str(count)],
                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
    _wait_http(f"http://127.0.0.1:{port}/healthz")
    time.sleep(2.0)  # every process up (the first to answer may be alone yet) and its count published
    supervisor = psutil.Process(node.pid)
    watched = [supervisor, *supervisor.children()]
    per_process: list[int] = []

    def on_post(i: int) -> None:
        if i == 1:
            per_process.extend(_readers_per_process(run.redis.url))

    label = f"flashwire (serve --workers {count})"
    url = [f"ws://127.0.0.1:{port}/ws?editions=en"]
    result = run.measure(
        label, url, f"http://127.0.0.1:{port}", watched, f"workers-{count}", 0.0, on_post=on_post
    )
    result.per_process = per_process
    node.terminate()
    node.wait(30)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between posts")
    parser.add_argument(
        "--stalled", type=float, default=0.0, help="fraction of subscribers that stop reading"
    )
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument(
        "--reference-processes",
        type=int,
        help="run the reference as this many processes on one port (SO_REUSEPORT); default 1. "
        "Given with --workers, the reference runs too",
    )
    parser.add_argument(
        "--transport",
        default="ws",
        help="comma-separated: ws, sse or ws,sse (each on a fresh node set; SSE reported against WebSocket)",
    )
    parser.add_argument(
        "--filters",
        choices=["random"],
        help="random: an unfiltered half, then one where each reader has its own random filter",
    )
    parser.add_argument("--seed", type=int, default=1, help="the random filters' and lines' seed")
    parser.add_argument(
        "--profile", help="py-spy the (first) service while posting; collapsed stacks to this file"
    )
    parser.add_argument(
        "--storm",
        action="store_true",
        help="restart the subscribers' service process a third of the way through (needs --services 2: "
        "the second one takes the posts)",
    )
    parser.add_argument(
        "--workers",
        help="comma-separated process counts, e.g. 1,2: one `serve --workers N` node per count, one after"
        " the other, instead of --services",
    )
    parser.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    return parser


@dataclass
class Outcome:
    """What one invocation measured: the halves in the order they ran, and the report's lines."""

    results: list[Result]
    lines: list[str]

    def find(self, role: str = "flashwire", transport: str = "ws", filtered: bool = False) -> Result | None:
        for result in self.results:
            if (result.role, result.transport, result.filtered) == (role, transport, filtered):
                return result
        return None


def _start_services(run: Run, count: int) -> tuple[list[subprocess.Popen[str]], list[int]]:
    """`count` fresh `flashwire serve` processes, each on a port of its own, answering."""
    ports = [free_port() for _ in range(count)]
    services = [
        run.start([PYTHON, "-m", "flashwire.cli", "serve", "--port", str(port)],
                  stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for port in ports
    ]  # fmt: skip
    for port in ports:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
    return services, ports


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


def _reader_urls(transport: str, ports: list[int]) -> list[str]:
    if transport == "sse":
        return [f"http://127.0.0.1:{port}/sse?editions=en" for port in ports]
    return [f"ws://127.0.0.1:{port}/ws?editions=en" for port in ports]


def _measure_halves(run: Run, args: argparse.Namespace, transports: list[str], api: str) -> list[Result]:
    """Each transport (and, with --filters, unfiltered then filtered) on a fresh node set.

    The lines are posted to `api`, a node of its own that holds no reader: the readers' nodes
    then spend their CPU on fan-out alone, so CPU per delivery compares halves whose reach differs
    (a filtered half delivers a fifth as many messages for the same posts).
    """
    results = []
    plural = "es" if args.services > 1 else ""
    for transport in transports:
        for filtered in [False, True] if args.filters else [False]:
            services, ports = _start_services(run, args.services)
            label = (
                f"flashwire ({args.services} process{plural}), {'SSE' if transport == 'sse' else 'WebSocket'}"
            )
            if filtered:
                label += f", random filters (seed {args.seed})"
            elif args.filters:
                label += ", unfiltered"
            tag = f"{transport}-{'filtered' if filtered else 'all'}"
            watched = [psutil.Process(p.pid) for p in services]
            results.append(run.measure(label, _reader_urls(transport, ports), api, watched, tag, 0.0,
                                       transport=transport, filtered=filtered))  # fmt: skip
            _stop(services)
    return results


def _measure_reference(run: Run, args: argparse.Namespace, api: str) -> Result:
    """bench.reference as --reference-processes processes sharing one port, all of them watched."""
    count = args.reference_processes or 1
    port = free_port()
    processes = []
    for _ in range(count):
        command = [PYTHON, "-m", "bench.reference", "--port", str(port), "--redis", run.redis.url]
        processes.append(
            run.start([*command, *(["--reuse-port"] if count > 1 else [])], stdout=subprocess.PIPE)
        )
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise SystemExit("a reference process failed to start")
    name = "reference (websockets broadcast" + (f", {count} processes)" if count > 1 else ")")
    watched = [psutil.Process(p.pid) for p in processes]
    result = run.measure(name, [f"ws://127.0.0.1:{port}/"], api, watched, "reference", 0.0, role="reference")
    _stop(processes)
    return result


def run(args: argparse.Namespace, command: str) -> Outcome:
    """Everything one invocation measures, then its report (bench.round2 calls this directly)."""
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    if not transports or set(transports) - {"ws", "sse"}:
        raise SystemExit(f"--transport takes ws, sse or ws,sse, got {args.transport!r}")
    if transports != ["ws"] and (args.workers or args.storm):
        raise SystemExit("--workers and --storm measure WebSocket readers only")
    if args.filters and args.stalled:
        raise SystemExit("--filters and --stalled do not combine")
    if args.workers and args.reference_processes is None:
        args.no_reference = True  # the comparison is between the process counts
    if args.storm:
        args.services = max(args.services, 2)
        args.no_reference = True
    halves = len(transports) > 1 or args.filters is not None
    if halves and (args.storm or args.stalled or args.workers):
        raise SystemExit(
            "--transport ws,sse and --filters do not combine with --storm, --stalled or --workers"
        )
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        run = Run(args, Path(tmp_name))
        try:
            run.start([PYTHON, "-m", "flashwire.cli", "worker"], stderr=subprocess.DEVNULL)
            # With halves, this one process is the desk: it takes every post and holds no reader.
            services, ports = _start_services(run, 1 if halves else args.services)
            asyncio.run(run.make_token())
            watched = [psutil.Process(p.pid) for p in services]
            urls = _reader_urls(transports[0], ports)
            api = f"http://127.0.0.1:{ports[0]}"
            label = f"flashwire ({args.services} process{'es' if args.services > 1 else ''})"
            if transports == ["sse"]:
                label += ", SSE"
            if args.storm:
                label = "flashwire (1 process; a second takes the posts)"
            if args.storm:
                storm_node = services[0]
                api = f"http://127.0.0.1:{ports[1]}"
                urls = urls[:1]

                def restart() -> None:
                    storm_node.terminate()
                    storm_node.wait(30)
                    replacement = run.start([PYTHON, "-m", "flashwire.cli", "serve", "--port", str(ports[0])],
                                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
                    _wait_http(f"http://127.0.0.1:{ports[0]}/healthz")
                    run.storm_metrics_url = f"http://127.0.0.1:{ports[0]}/metrics"
                    del replacement

                def on_post(i: int) -> None:
                    if i == args.lines // 3:
                        threading.Thread(target=restart, daemon=True).start()

                results.append(run.measure(f"{label}, restarted mid-run", urls, api, [], "storm", 0.0,
                                           on_post=on_post, reconnect=True))  # fmt: skip
                metrics = httpx.get(run.storm_metrics_url).text
                run.storm_report = {
                    name: int(float(value))
                    for line in metrics.splitlines()
                    if line.startswith("flashwire_") and " " in line and "{" not in line
                    for name, value in [line.split(" ", 1)]
                }
            elif args.stalled:
                # The same service, first with every subscriber reading, then with some stalled.
                results.append(
                    run.measure(label, urls, api, watched, "service", 0.0, transport=transports[0])
                )
                results.append(run.measure(f"{label}, {args.stalled:.0%} stalled", urls, api, watched,
                                           "stalled", args.stalled, transport=transports[0]))  # fmt: skip
                results[-1].rss_after_mib = sum(p.memory_info().rss for p in watched) / 2**20
            elif args.workers:
                _stop(services)
                for count in [int(n) for n in args.workers.split(",")]:
                    results.append(_measure_workers(run, count))
                if not args.no_reference:
                    # A node of its own takes the reference's posts (it holds no reader).
                    services, ports = _start_services(run, 1)
                    api = f"http://127.0.0.1:{ports[0]}"
            elif halves:
                results.extend(_measure_halves(run, args, transports, api))
            else:
                results.append(
                    run.measure(label, urls, api, watched, "service", 0.0, transport=transports[0])
                )
            if not args.no_reference:
                results.append(_measure_reference(run, args, api))
        finally:
            run.close()
    lines = report(args, command, results)
    if args.storm:
        stats = run.storm_report
        lines += [
            "",
            f"Reconnections: {run.reconnects:,}. On the restarted process: replay reads from Redis "
            f"{stats.get('flashwire_replay_reads_total', 0):,}, replays served from the warm ring "
            f"{stats.get('flashwire_replay_from_ring_total', 0):,}, snapshot reads "
            f"{stats.get('flashwire_snapshot_reads_total', 0):,}.",
        ]
    return Outcome(results, lines)


def main() -> None:
    args = build_parser().parse_args()
    outcome = run(args, "python -m bench.fanout " + " ".join(sys.argv[1:]))
    print("\n".join(outcome.lines))
    if args.record:
        with open(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", "a") as handle:
            handle.write("\n" + "\n".join(outcome.lines) + "\n")


def report(args: argparse.Namespace, command: str, results: list[Result]) -> list[str]:
    import redis
    import uvicorn
    import websockets

    lines = [
        f"### `{command}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, uvicorn {uvicorn.__version__}, websockets {websockets.__version__}, "
        f"redis-py {redis.__version__}; {args.lines} lines, one every {args.interval} s"
        + (f"; {args.stalled:.0%} of subscribers stalled" if args.stalled else ""),
        "",
        "| server | subscribers | POST→first | POST→50% | POST→99% | POST→last (median) | POST→last (max) "
        "| deliveries/s | lost | duplicated | server CPU | CPU per delivery | RSS per connection |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cpu = f"{r.cpu_s:.1f} s" if r.cpu_s is not None else "—"
        per = f"{r.cpu_per_delivery_us:.1f} µs" if r.cpu_per_delivery_us is not None else "—"
        rss = f"{r.rss_per_conn_kib:.1f} KiB" if r.rss_per_conn_kib is not None else "—"
        lines.append(
            f"| {r.name} | {r.subscribers:,} | {r.first_ms:.1f} ms | {r.median_ms:.1f} ms | {r.p99_ms:.1f} ms "
            f"| {r.last_ms:.1f} ms | {r.last_max_ms:.1f} ms | {r.deliveries_per_s:,.0f} | {r.lost} | {r.duplicated} "
            f"| {cpu} | {per} | {rss} |"
        )
    for r in results:
        if len(r.samples) >= 4:
            third = len(r.samples) // 3
            early = statistics.mean(rss for _, rss, _ in r.samples[:third])
            late = statistics.mean(rss for _, rss, _ in r.samples[-third:])
            queued = (
                f"; frames queued in outboxes at most {max(q for _, _, q in r.samples)}"
                if r.role == "flashwire" else ""
            )  # fmt: skip
            lines += [
                "",
                f"{r.name}: server RSS while posting, first third {early:.0f} MiB, last third "
                f"{late:.0f} MiB ({late / early - 1:+.1%}){queued} over {len(r.samples)} samples",
            ]
    if args.stalled and len(results) >= 2:
        growth = results[1].last_ms / results[0].last_ms - 1
        lines += [
            "",
            f"POST→last median of the reading subscribers with {args.stalled:.0%} stalled vs none: "
            f"**{growth:+.1%}**; service RSS after the stalled run: {results[1].rss_after_mib:.0f} MiB",
        ]
    for r in results:
        if r.per_process:
            lines += ["", f"{r.name}: readers per process {' / '.join(f'{n:,}' for n in r.per_process)}"]
    nodes = [r for r in results if r.role == "flashwire"]
    if args.workers and len(nodes) >= 2:
        base = nodes[0]
        for r in nodes[1:]:
            lines += [
                "",
                f"{r.name} vs {base.name}: POST→50% median {r.median_ms / base.median_ms:.2f}×, "
                f"POST→last median {r.last_ms / base.last_ms:.2f}×",
            ]
    lines += comparisons(results)
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def client_cpu_us(result: Result) -> float:
    """The load generators' CPU per delivery, µs (0 without deliveries)."""
    return result.client_cpu_s / result.deliveries * 1e6 if result.deliveries else 0.0


def comparisons(results: list[Result]) -> list[str]:
    """The ratios each kind of run is for: SSE / WebSocket, filtered / unfiltered, Flashwire / reference."""
    lines: list[str] = []
    outcome = Outcome(results, [])
    ws, sse = outcome.find(transport="ws"), outcome.find(transport="sse")
    if ws is not None and sse is not None:
        lines += [
            "",
            f"SSE / WebSocket, same node shape: POST→last median **{_ratio(sse.last_ms, ws.last_ms)}** "
            f"({sse.last_ms:.1f} vs {ws.last_ms:.1f} ms), POST→first median {_ratio(sse.first_ms, ws.first_ms)} "
            f"({sse.first_ms:.1f} vs {ws.first_ms:.1f} ms), CPU per delivery "
            f"{_ratio(sse.cpu_per_delivery_us, ws.cpu_per_delivery_us)}; RSS per idle connection: SSE "
            f"{sse.rss_per_conn_kib or 0:.1f} KiB, WebSocket {ws.rss_per_conn_kib or 0:.1f} KiB; the load "
            f"generators' own CPU per delivery: SSE {client_cpu_us(sse):.1f} µs, WebSocket {client_cpu_us(ws):.1f} µs",
        ]
    for transport in ("ws", "sse"):
        plain, chosen = outcome.find(transport=transport), outcome.find(transport=transport, filtered=True)
        if plain is None or chosen is None or not chosen.lasts_ms:
            continue
        median = statistics.median(chosen.lasts_ms)
        worst = max(chosen.lasts_ms)
        lines += [
            "",
            f"{chosen.name}: {chosen.deliveries:,} deliveries of {chosen.expected:,} due "
            f"({chosen.expected / (plain.expected or 1):.0%} of readers × lines match); "
            f"lost {chosen.lost}, duplicated or out of order {chosen.duplicated}, unexpected {chosen.unexpected}",
            "",
            f"Random filters / unfiltered: CPU per delivered message "
            f"**{_ratio(chosen.cpu_per_delivery_us, plain.cpu_per_delivery_us)}** "
            f"({chosen.cpu_per_delivery_us or 0:.1f} vs {plain.cpu_per_delivery_us or 0:.1f} µs); "
            f"POST→last matching reader median {median:.1f} ms (unfiltered POST→last {plain.last_ms:.1f} ms), "
            f"worst line {worst:.1f} ms = **{worst / median:.2f}×** the median",
        ]
    reference = outcome.find(role="reference")
    flashwire = next((r for r in results if r.role == "flashwire" and not r.filtered), None)
    if reference is not None and flashwire is not None:
        lines += [
            "",
            f"POST→last median, Flashwire / reference: **{flashwire.last_ms / reference.last_ms:.2f}×**; "
            f"POST→first median: {flashwire.first_ms:.1f} vs {reference.first_ms:.1f} ms "
            f"({flashwire.first_ms / reference.first_ms:.2f}×); RSS per connection "
            f"{flashwire.rss_per_conn_kib or 0:.1f} vs {reference.rss_per_conn_kib or 0:.1f} KiB",
        ]
    return lines


if __name__ == "__main__":
    main()
