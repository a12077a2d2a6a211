"""Web Push sends per second of one WebPushSender (one process) against the local push service.

    python -m bench.push_webpush --targets 10000 --concurrency 100

Starts tests/push_services/webpush.py in its own process, has it make N subscriptions (each with
its own P-256 key pair and auth secret), then sends one flash alert to all of them through one
sender, at most C in flight (asyncio.Semaphore), as a fan-out job would. Each send encrypts the
payload for its subscription (RFC 8291: a fresh ECDH key per message) and the service verifies
VAPID and decrypts every message, so both sides do the real per-message work. Prints a Markdown
table row; both processes share this machine's cores, so the figure is a floor for the sender.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

from flashwire.workers.push.base import Alert, Target
from flashwire.workers.push.webpush import WebPushSender, generate_vapid_key_pem
from tests.push_services import PushService


def _alert() -> Alert:
    return Alert(
        kind="line",
        line_id="en-00000000000000be",
        version=1,
        edition="en",
        language="en",
        direction="ltr",
        title="Breaking",
        text="Parliament votes to dissolve itself; elections in sixty days, the speaker says",
        url="https://news.example.org/live/1",
        cursor="1733600000000-0",
        urgency="flash",
        expires_at_s=int(time.time()) + 3600,
    )


async def _run(service: PushService, count: int, concurrency: int) -> tuple[float, Counter[str]]:
    subscriptions = service.targets(count)
    targets = [
        Target(
            id=str(i),
            platform="webpush",
            token=s["endpoint"],
            p256dh=s["keys"]["p256dh"],
            auth=s["keys"]["auth"],
        )
        for i, s in enumerate(subscriptions)
    ]
    sender = WebPushSender(
        vapid_private_key_pem=generate_vapid_key_pem(),
        subject="mailto:bench@flashwire.news",
        max_connections=concurrency,
    )
    alert = _alert()
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> str:
        async with gate:
            return (await sender.send(target, alert)).status

    try:
        started = time.perf_counter()
        statuses = await asyncio.gather(*(one(t) for t in targets))
        elapsed = time.perf_counter() - started
    finally:
        await sender.aclose()
    return elapsed, Counter(statuses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state_dir:
        service = PushService("webpush", Path(state_dir)).start()
        try:
            elapsed, statuses = asyncio.run(_run(service, args.targets, args.concurrency))
            received = len(service.received())
        finally:
            service.stop()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| platform | targets | in flight | seconds | sends/s | accepted | received by the service |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| Web Push (one sender, one process) | {args.targets:,} | {args.concurrency} | {elapsed:.2f} "
        f"| {args.targets / elapsed:,.0f} | {statuses['accepted']:,} | {received:,} |"
    )


if __name__ == "__main__":
    main()
