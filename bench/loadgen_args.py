"""The command line both load generators share, and the readers it describes.

bench.fanout starts bench.loadgen_picows or bench.loadgen_sse with the same arguments; this module
turns them into one (URL, expected lines) pair per reader of the process. With `--seed`, reader j
of the process is reader `--first-reader + j` of the run and gets that reader's random filter
(bench.filters), added to its URL's query; without it every reader takes every line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.filters import expected_lines, random_lines, reader_filters

__all__ = [
    "ReaderPlan",
    "hold_readers",
    "local_addr",
    "parse",
    "raise_fd_limit",
    "reader_plans",
    "write_summary",
]

# Connections opened at once by one load generator.
CONNECTING_AT_ONCE = 200


@dataclass(frozen=True)
class ReaderPlan:
    url: str
    expected: list[int] | None  # None: every line


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True, help="comma-separated URLs with their query, round-robin")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--stalled", type=int, default=0, help="how many of this process's subscribers stall")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--reconnect", action="store_true", help="resume with the cursor after a drop")
    parser.add_argument("--seed", type=int, help="random filters (bench.filters) from this seed")
    parser.add_argument("--first-reader", type=int, default=0, help="this process's first reader in the run")
    parser.add_argument("--readers-total", type=int, default=0, help="readers in the run (with --seed)")
    parser.add_argument("--topics", default="", help="comma-separated configured topics (with --seed)")
    parser.add_argument(
        "--source",
        help="connect from this local address, e.g. 127.0.0.2: each (source, server address) pair has "
        "only the ~28,000 ephemeral ports, fewer than 30,000 readers of one port need",
    )
    return parser.parse_args(argv)


def local_addr(args: argparse.Namespace) -> dict[str, Any]:
    """create_connection's keyword for --source, if given."""
    return {"local_addr": (args.source, 0)} if args.source else {}


def reader_plans(args: argparse.Namespace) -> list[ReaderPlan]:
    urls = args.urls.split(",")
    if args.seed is None:
        return [ReaderPlan(urls[i % len(urls)], None) for i in range(args.count)]
    topics = args.topics.split(",")
    filters = reader_filters(args.seed, args.readers_total, topics)
    lines = random_lines(args.seed, args.lines, topics)
    plans = []
    for i in range(args.count):
        chosen = filters[args.first_reader + i]
        plans.append(ReaderPlan(urls[i % len(urls)] + chosen.query(), expected_lines(chosen, lines)))
    return plans


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))


def write_summary(path: str, summary: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(summary))


async def hold_readers(
    args: argparse.Namespace,
    stats: Any,
    open_one: Callable[[int], Awaitable[None]],
    close_all: Callable[[], None],
) -> None:
    """What both load generators do with their readers: open `args.count` of them (`open_one(i)`,
    CONNECTING_AT_ONCE at a time), print "ready" once every one has its snapshot, measure until
    each got its lines or `args.timeout` passed, write the summary to `args.out`, close them
    (`close_all`) and print "done". `stats` is a bench.reader_check.Stats."""
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def gated(i: int) -> None:
        async with gate:
            await open_one(i)

    await asyncio.gather(*(gated(i) for i in range(args.count)))
    await asyncio.wait_for(stats.all_ready.wait(), 120)
    print("ready", flush=True)
    stats.measuring()
    try:
        await asyncio.wait_for(stats.done.wait(), args.timeout)
    except TimeoutError:
        pass
    write_summary(args.out, stats.summary())
    close_all()
    print("done", flush=True)
