"""POST-to-delivery latency of one service node with N local subscribers.

    python -m bench.latency --subscribers 1000 --lines 50

Starts a private redis-server, the worker and one service node, a load-generator
process with N subscribers, then posts L lines through the real API (one every
`--interval` seconds) and reports, per line, the time from the POST being sent
to the first, median, 99th-percentile and last delivery; plus lost and
duplicated events. Loopback only, bounded in time.

    python -m bench.latency --subscribers 1000 --lines 50 --legs

`--legs` also splits each line's way into legs, from the Redis server's MONITOR feed
(bench/redis_trace.py): the POST sent -> its desk XADD -> the POST's answer received; the desk
XADD -> the worker's ticker XADD -> the first delivery; medians over the lines, and the Redis
commands of one line in order (the round trips of each leg). MONITOR slows the server a little:
take the headline figures from a run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.redis_trace import RedisTrace, desk_and_ticker_times, trace_of
from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit("service exited during start-up")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("service did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--legs", action="store_true", help="split each line's way into legs (MONITOR)")
    args = parser.parse_args()
    trace: RedisTrace | None = None
    answered: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisProcess(Path(tmp) / "redis").start()
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis.url,
            "FLASHWIRE_MAX_CONNECTIONS": str(args.subscribers + 100),
            # Every subscriber comes from 127.0.0.1: no per-address cap in the way.
            "FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT": str(args.subscribers + 100),
            "FLASHWIRE_MAX_SOCKETS": str(args.subscribers + 200),
            # One token posts every line: no rate limit in the way of the measurement.
            "FLASHWIRE_POST_RATE_LIMIT": "100000/second",
        }
        python = sys.executable
        worker = subprocess.Popen(
            [python, "-m", "flashwire.cli", "worker"], env=env, stderr=subprocess.DEVNULL
        )
        service = subprocess.Popen(
            [python, "-m", "flashwire.cli", "serve", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        out = Path(tmp) / "arrivals.json"
        loadgen = None
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, service)
            import asyncio

            from redis.asyncio import Redis

            from flashwire.core.keys import Keys
            from flashwire.service.tokens import TokenStore

            async def make_token() -> str:
                client = Redis.from_url(redis.url)
                secret, _ = await TokenStore(client, Keys("fw")).create(
                    name="bench", role="editor", editions=["en"]
                )
                await client.aclose()
                return secret

            token = asyncio.run(make_token())
            loadgen = subprocess.Popen(
                [
                    python,
                    "-m",
                    "bench.loadgen",
                    "--url",
                    f"ws://127.0.0.1:{port}/ws",
                    "--subscribers",
                    str(args.subscribers),
                    "--lines",
                    str(args.lines),
                    "--out",
                    str(out),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert loadgen.stdout is not None
            if loadgen.stdout.readline().strip() != "ready":
                raise SystemExit("load generator failed")
            posted: dict[str, float] = {}
            if args.legs:
                trace = RedisTrace(redis.url)
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
                for i in range(args.lines):
                    started = time.time()
                    response = client.post("/api/v1/lines", json={"edition": "en", "text": f"bench line {i}"})
                    response.raise_for_status()
                    posted[response.json()["id"]] = started
                    answered[response.json()["id"]] = time.time()
                    time.sleep(args.interval)
            loadgen.wait(180)
            result = json.loads(out.read_text())
            commands = trace.stop() if trace is not None else []
        finally:
            for process in (loadgen, service, worker):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(20)
            redis.stop()
    arrivals: dict[str, list[float]] = result["arrivals"]
    firsts, medians, p99s, lasts = [], [], [], []
    lost = 0
    for line_id, sent in posted.items():
        times = [t - sent for t in arrivals.get(line_id, [])]
        lost += args.subscribers - len(times)
        if not times:
            continue
        firsts.append(min(times))
        medians.append(statistics.median(times))
        p99s.append(_percentile(times, 0.99))
        lasts.append(max(times))
    ms = 1000
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"command: python -m bench.latency --subscribers {args.subscribers} --lines {args.lines} "
        f"--interval {args.interval}"
    )
    print(
        "| subscribers | lines | first (median) | 50% (median) | 99% (median) | last (median) | last (max) "
        "| lost | duplicated |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.subscribers} | {args.lines} | {statistics.median(firsts) * ms:.1f} ms "
        f"| {statistics.median(medians) * ms:.1f} ms | {statistics.median(p99s) * ms:.1f} ms "
        f"| {statistics.median(lasts) * ms:.1f} ms | {max(lasts) * ms:.1f} ms | {lost} "
        f"| {result['duplicates']} |"
    )

    answers = [(answered[line_id] - sent) * ms for line_id, sent in posted.items()]
    print(
        f"POST sent -> answer received: median {statistics.median(answers):.2f} ms, "
        f"p90 {_percentile(answers, 0.9):.2f} ms"
    )
    if args.legs:
        _print_legs(posted, answered, result["arrivals"], commands)


def _print_legs(
    posted: dict[str, float],
    answered: dict[str, float],
    arrivals: dict[str, list[float]],
    commands: list[Any],
) -> None:
    """Median per leg over the lines (ms), and one line's Redis commands in order."""
    desk, ticker = desk_and_ticker_times(commands)
    legs: dict[str, list[float]] = {
        name: []
        for name in (
            "POST sent -> desk XADD",
            "desk XADD -> POST answer received",
            "POST (sent -> answer received)",
            "desk XADD -> ticker XADD (worker)",
            "ticker XADD -> first delivery (node)",
            "POST sent -> first delivery",
        )
    }
    for line_id, sent in posted.items():
        if line_id not in desk or line_id not in ticker or not arrivals.get(line_id):
            continue
        first = min(arrivals[line_id])
        points = [
            (sent, desk[line_id]),
            (desk[line_id], answered[line_id]),
            (sent, answered[line_id]),
            (desk[line_id], ticker[line_id]),
            (ticker[line_id], first),
            (sent, first),
        ]
        for values, (start, end) in zip(legs.values(), points, strict=True):
            values.append((end - start) * 1000)
    print(f"| leg (MONITOR on, {len(legs['POST sent -> first delivery'])} lines) | median | p90 |")
    print("|---|---|---|")
    for name, values in legs.items():
        if values:
            print(f"| {name} | {statistics.median(values):.2f} ms | {_percentile(values, 0.9):.2f} ms |")
    middle = sorted(posted)[len(posted) // 2] if posted else None
    if middle is not None and middle in arrivals:
        start = posted[middle]
        print(f"\nRedis commands from the POST of {middle} to its first delivery:")
        for row in trace_of(commands, start, min(arrivals[middle])):
            print(row)


if __name__ == "__main__":
    main()
