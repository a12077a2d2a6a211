"""FCM sends per second of one FcmSender (one process) against the local FCM service.

    python -m bench.push_fcm --sends 2000 --concurrency 100 --rounds 3

Starts tests.push_services.fcm (HTTPS, ALPN h2 and http/1.1, in its own process), takes
`--sends` registration tokens from it, then for each round and each protocol (HTTP/2 and
HTTP/1.1, alternating which goes first) builds a sender, warms it with one send (the access
token and the first connection), and times `--sends` sends under a semaphore of
`--concurrency`, as a fan-out batch job does. Prints one Markdown table row per protocol: the
median sends per second, and the CPU time per send of the sender's process and of the service's
(CPU is the steadier figure on a shared machine; wall-clock rates move with the neighbours' load).
Loopback only; the service is Python too, so the rates bound ours from below, not FCM's.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from flashwire.workers.push.base import Alert, Target
from flashwire.workers.push.fcm import FcmSender
from tests.push_services import PushService


@dataclass
class Run:
    sends_per_s: float
    sender_cpu_us: float
    service_cpu_us: float
    accepted: int


def alert() -> Alert:
    return Alert(
        kind="line",
        line_id="en-0123456789abcdef",
        version=1,
        edition="en",
        language="en",
        direction="ltr",
        title="Breaking",
        text="A line of about the usual length for a flash, with a few more words to make it so.",
        url="https://news.example/lines/en-0123456789abcdef",
        cursor="1796680000000-0",
        urgency="flash",
        expires_at_s=int(time.time()) + 3_600,
    )


async def one_run(service: PushService, tokens: list[str], http2: bool, concurrency: int) -> Run:
    sender = FcmSender(
        credentials_file=str(service.state_dir / "service-account.json"),
        endpoint=f"https://127.0.0.1:{service.port}",
        ca_file=str(service.state_dir / "ca.pem"),
        max_connections=concurrency,
        http2=http2,
    )
    server = psutil.Process(service.process.pid)  # type: ignore[union-attr]
    message = alert()
    limit = asyncio.Semaphore(concurrency)

    async def send(token: str) -> str:
        async with limit:
            return (await sender.send(Target(id=token[:8], platform="fcm", token=token), message)).status

    try:
        await send(tokens[0])
        server_cpu, cpu, started = sum(server.cpu_times()[:2]), time.process_time(), time.perf_counter()
        statuses = await asyncio.gather(*(send(t) for t in tokens))
        elapsed = time.perf_counter() - started
        cpu, server_cpu = time.process_time() - cpu, sum(server.cpu_times()[:2]) - server_cpu
    finally:
        await sender.aclose()
    n = len(tokens)
    return Run(n / elapsed, cpu / n * 1e6, server_cpu / n * 1e6, Counter(statuses)["accepted"])


async def bench(sends: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fcm-") as state_dir:
        service = PushService("fcm", Path(state_dir)).start()
        try:
            tokens = [t["token"] for t in service.targets(sends)]
            runs: dict[bool, list[Run]] = {True: [], False: []}
            for round_ in range(rounds):
                for http2 in (True, False) if round_ % 2 == 0 else (False, True):
                    runs[http2].append(await one_run(service, tokens, http2, concurrency))
        finally:
            service.stop()
    print(f"machine: {platform.machine()} {psutil.cpu_count()} cores, Python {platform.python_version()}")
    print(
        "| sender | sends | concurrency | sends/s (median of "
        f"{rounds}) | sender CPU per send | service CPU per send | accepted |"
    )
    print("|---|---|---|---|---|---|---|")
    for http2, label in ((True, "FcmSender, HTTP/2"), (False, "FcmSender, HTTP/1.1")):
        done = runs[http2]
        print(
            f"| {label} | {sends:,} | {concurrency} "
            f"| {statistics.median(r.sends_per_s for r in done):,.0f} "
            f"| {statistics.median(r.sender_cpu_us for r in done):,.0f} µs "
            f"| {statistics.median(r.service_cpu_us for r in done):,.0f} µs "
            f"| {min(r.accepted for r in done):,} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(bench(args.sends, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
