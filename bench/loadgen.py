"""Load generator: N WebSocket subscribers in this process, recording when each line arrives.

Run by bench.latency as a separate process so the readers' CPU is not the service's.
Prints "ready" once every subscriber has its snapshot, then writes a JSON file
{line_id: [receive times]} once every subscriber has `lines` lines (or on timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict

import orjson
from websockets.asyncio.client import connect


async def _subscriber(
    url: str,
    lines: int,
    ready: asyncio.Event,
    counter: list[int],
    arrivals: dict[str, list[float]],
    duplicates: list[int],
) -> None:
    async with connect(url, compression=None, max_queue=None, open_timeout=60) as ws:
        seen: set[str] = set()
        async for raw in ws:
            now = time.time()
            message = orjson.loads(raw)
            kind = message["type"]
            if kind == "snapshot":
                counter[0] += 1
                if counter[0] == counter[1]:
                    ready.set()
            elif kind == "line":
                line_id = message["line"]["id"]
                if line_id in seen:
                    duplicates[0] += 1
                    continue
                seen.add(line_id)
                arrivals[line_id].append(now)
                if len(seen) == lines:
                    return


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--subscribers", type=int, required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    arrivals: dict[str, list[float]] = defaultdict(list)
    ready = asyncio.Event()
    counter = [0, args.subscribers]
    duplicates = [0]
    tasks = []
    for i in range(args.subscribers):
        tasks.append(
            asyncio.create_task(
                _subscriber(f"{args.url}?editions=en", args.lines, ready, counter, arrivals, duplicates)
            )
        )
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(ready.wait(), 120)
    print("ready", flush=True)
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    failures = sum(1 for task in done if task.exception() is not None)
    with open(args.out, "w") as handle:  # noqa: ASYNC230 - once, after the measurement
        json.dump(
            {
                "arrivals": arrivals,
                "duplicates": duplicates[0],
                "unfinished": len(pending),
                "failed": failures,
            },
            handle,
        )


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    sys.exit(0)
