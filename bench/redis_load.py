"""What service nodes cost the Redis primary: commands per second per node, and Redis CPU, with
N nodes on one Redis (docs/scaling.md).

    python -m bench.redis_load --nodes 1,2,4,8 --readers 250 --seconds 20 --rate 2

For each N: a private redis-server (no persistence), one worker, N `flashwire serve` processes,
`--readers` WebSocket readers on each node (picows, bench.loadgen_picows). Then two phases of
`--seconds` each: idle (readers connected, nothing posted) and posting (`--rate` lines a second
through the real API, every reader receiving every line). For each phase, from Redis's own
counters (`INFO stats` total_commands_processed, `INFO commandstats`, `INFO cpu`): commands per
second in all, what each node beyond the first adds (the slope from the smallest run: the
worker's and the poster's commands are in every run and cancel out) and which commands make it up,
and the primary's CPU seconds per second.

Counts, not timings: what a node asks of Redis depends on its loops and the line rate, not on how
busy this shared machine is; the CPU figures do depend on the machine, and are given as a share of
one core. Every reader must get every line (checked), or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.fanout import _spawn, _wait_http
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess

PYTHON = sys.executable


@dataclass
class Phase:
    """Redis's counters over one phase."""

    seconds: float
    commands: int
    cpu_s: float
    by_command: dict[str, int]

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds


def _counters(client: redis.Redis) -> tuple[int, float, dict[str, int]]:
    stats = client.info("stats")
    cpu = client.info("cpu")
    commandstats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in commandstats.items()}
    used = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    return int(stats["total_commands_processed"]), used, calls


def _measure(client: redis.Redis, seconds: float, during: object = None) -> Phase:
    commands0, cpu0, calls0 = _counters(client)
    started = time.monotonic()
    if callable(during):
        during()
    else:
        time.sleep(seconds)
    elapsed = time.monotonic() - started
    commands1, cpu1, calls1 = _counters(client)
    # The INFO calls of this measurement are not the nodes': 3 before, 3 after.
    by_command = {name: calls1[name] - calls0.get(name, 0) for name in calls1}
    by_command["info"] = by_command.get("info", 0) - 3
    return Phase(elapsed, commands1 - commands0 - 3, cpu1 - cpu0, {k: v for k, v in by_command.items() if v})


def run(nodes: int, tmp: Path, args: argparse.Namespace) -> tuple[Phase, Phase]:
    """Idle and posting phases with `nodes` service processes (at least 1: node 0 takes the posts)."""
    server = RedisProcess(tmp / f"redis-{nodes}", appendonly=False).start()
    env = {
        **os.environ,
        "REDIS_URL": server.url,
        "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT": "19000",
        "FLASHWIRE_POST_RATE_LIMIT": "100000/second",
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[subprocess.Popen[str]] = []
    try:
        processes.append(
            _spawn(
                [PYTHON, "-m", "flashwire.cli", "worker"],
                env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ports = [free_port() for _ in range(nodes)]
        for port in ports:
            processes.append(_spawn([PYTHON, "-m", "flashwire.cli", "serve", "--port", str(port)], env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        for port in ports:
            _wait_http(f"http://127.0.0.1:{port}/healthz")
        token = subprocess.run(
            [PYTHON, "-m", "flashwire.cli", "token", "create", "--name", "bench", "--role", "editor",
             "--editions", "en"], env=env, capture_output=True, text=True, check=True,
        ).stdout.split()[-1]  # fmt: skip
        lines = int(args.seconds * args.rate)
        loadgens: list[tuple[Path, subprocess.Popen[str]]] = []
        for index, port in enumerate(ports):
            out = tmp / f"loadgen-{nodes}-{index}.json"
            loadgens.append((out, _spawn(
                [PYTHON, "-m", "bench.loadgen_picows", "--urls", f"ws://127.0.0.1:{port}/ws?editions=en",
                 "--count", str(args.readers), "--lines", str(lines), "--out", str(out),
                 "--timeout", str(args.seconds * 3 + 60)], env, stdout=subprocess.PIPE,
            )))  # fmt: skip
        for _, process in loadgens:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a load generator failed to connect its readers")
        client = redis.Redis.from_url(server.url)
        time.sleep(2.0)  # past the connections' first snapshots and counts
        idle = _measure(client, args.seconds)

        def post() -> None:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{ports[0]}", headers={"Authorization": f"Bearer {token}"}
            ) as api:
                start = time.monotonic()
                for i in range(lines):
                    api.post("/api/v1/lines", json={"edition": "en", "text": f"bench {i}"}).raise_for_status()
                    time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))

        posting = _measure(client, args.seconds, post)
        for out, process in loadgens:
            assert process.stdout is not None
            process.stdout.readline()
            process.wait(120)
            summary = json.loads(out.read_text())
            got = sum(len(times) for times in summary["arrivals"])
            if got != args.readers * lines or summary["duplicates"] or summary["out_of_order"]:
                raise SystemExit(f"{nodes} nodes: a reader missed or repeated a line ({summary})")
        client.close()
        return idle, posting
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nodes", default="1,2,4,8", help="comma-separated node counts, the first the smallest"
    )
    parser.add_argument("--readers", type=int, default=250, help="WebSocket readers per node")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=2.0, help="lines posted per second")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.nodes.split(","))
    print(f"command: python -m bench.redis_load {' '.join(sys.argv[1:])}")
    print(
        "| nodes | readers | idle: commands/s | Redis CPU | posting: commands/s | Redis CPU | "
        "each node beyond the first, posting (commands/s) |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="fw-redis-load-") as folder:
        first: tuple[int, Phase, Phase] | None = None
        for nodes in counts:
            idle, posting = run(nodes, Path(folder), args)
            if first is None:
                first = (nodes, idle, posting)
                beyond = "—"
            else:
                # What each node adds: the slope from the smallest run (the worker and the
                # poster's traffic are in both, and cancel out).
                added = nodes - first[0]
                slope_idle = (idle.per_s - first[1].per_s) / added
                slope = (posting.per_s - first[2].per_s) / added
                by_command = {
                    name: (count / posting.seconds - first[2].by_command.get(name, 0) / first[2].seconds)
                    / added
                    for name, count in posting.by_command.items()
                }
                top = sorted(
                    ((rate, name) for name, rate in by_command.items() if rate >= 0.05), reverse=True
                )
                beyond = f"{slope:.1f} (idle {slope_idle:.1f}): " + ", ".join(
                    f"{name} {rate:.1f}" for rate, name in top[:6]
                )
            print(
                f"| {nodes} | {nodes * args.readers:,} | {idle.per_s:.1f} | {idle.cpu_s / idle.seconds:.1%} | "
                f"{posting.per_s:.1f} | {posting.cpu_s / posting.seconds:.1%} | {beyond} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
