"""APNs sender throughput: sends per second of one ApnsSender (one process) against the local
APNs endpoint (tests/push_services/apns.py, HTTP/2 over TLS, in its own process).

    python -m bench.push_apns [--sends 5000] [--concurrency 100]

Prints one Markdown table row: platform, sends, concurrency, seconds, sends/s, the sender's CPU
time per send and sends per CPU-second of the sender's process (the figure that holds on a
shared machine), outcomes, and the provider tokens and connections the service saw. Both
processes share the machine's cores, so sends/s is a floor for the sender alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from flashwire.workers.push.apns import ApnsSender
from flashwire.workers.push.base import Alert, Outcome, Target
from tests.push_services import PushService


async def run(sends: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        service = PushService("apns", Path(state)).start()
        try:
            provider = json.loads((service.state_dir / "apns-provider.json").read_text())
            sender = ApnsSender(
                key_pem=(service.state_dir / "apns-key.p8").read_text(),
                key_id=provider["key_id"],
                team_id=provider["team_id"],
                topic=provider["topic"],
                endpoint=f"https://127.0.0.1:{service.port}",
                ca_file=str(service.state_dir / "ca.pem"),
            )
            tokens = [device["token"] for device in service.targets(sends)]
            alert = Alert(
                kind="line",
                line_id="en-0123456789abcdef",
                version=1,
                edition="en",
                language="en",
                direction="ltr",
                title="Breaking",
                text="A flash line of a realistic length, about the size of one sentence of news.",
                url="https://news.example/line",
                cursor="1733600000000-0",
                urgency="flash",
                expires_at_s=int(time.time()) + 3_600,
            )
            gate = asyncio.Semaphore(concurrency)

            async def one(token: str) -> Outcome:
                async with gate:
                    return await sender.send(Target(id=token[:8], platform="apns", token=token), alert)

            # One send first: the TLS handshake and the first token are not part of the rate.
            await one(tokens[0])
            started, cpu_started = time.perf_counter(), time.process_time()
            outcomes = await asyncio.gather(*(one(token) for token in tokens[1:]))
            elapsed_s = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            await sender.aclose()
            stats = service.control("GET", "stats")
        finally:
            service.stop()
    counted = ", ".join(f"{status} {n}" for status, n in Counter(o.status for o in outcomes).items())
    print(
        "| platform | sends | concurrency | seconds | sends/s | sender CPU ms/send | sends per sender CPU-second "
        "| outcomes | provider tokens | connections |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| apns | {len(outcomes)} | {concurrency} | {elapsed_s:.2f} | {len(outcomes) / elapsed_s:,.0f} "
        f"| {cpu_s * 1000 / len(outcomes):.2f} | {len(outcomes) / cpu_s:,.0f} "
        f"| {counted} | {stats['provider_tokens']} | {stats['connections']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sends", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(run(args.sends, args.concurrency))


if __name__ == "__main__":
    main()
