"""What every load generator records and checks per reader, whatever the transport.

bench.loadgen_picows (WebSocket) and bench.loadgen_sse (SSE) hand each `bench <i>` line a reader
receives to its `ReaderCheck`, which records the arrival time under line i and checks the reader's
sequence against the lines it must get (all L lines, or those its filter matches, bench.filters):
each exactly once and in posting order. The summary both write is the same JSON, which
bench.fanout reads:

    {"cpu_s": s, "arrivals": [[t, ...] per line], "complete": n, "expected_complete": n, "duplicates": n,
     "out_of_order": n, "unexpected": n, "closed_early": n, "reconnects": n}

`cpu_s` is the load generator's own CPU time from "ready" to the summary (seconds), to tell
whether the clients, not the server, were what limited a run. `arrivals[i]` holds wall-clock times (time.time(), seconds) so that they compare with the
POST times taken in the bench process on the same machine. `unexpected` counts lines a reader
received that its filter does not match; `out_of_order` a line that arrived while an earlier
expected one was still missing (the reader then waits for the lines after it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["ReaderCheck", "Stats", "line_index"]

PREFIX = "bench "


def line_index(text: str) -> int | None:
    """The i of a `bench <i>` line's text, or None for any other line."""
    if not text.startswith(PREFIX):
        return None
    try:
        return int(text[len(PREFIX) :])
    except ValueError:
        return None


class Stats:
    """Counters shared by one load generator's readers, and the events its main loop waits on."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.arrivals: list[list[float]] = [[] for _ in range(lines)]
        self.ready = 0
        self.complete = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.unexpected = 0
        self.closed_early = 0
        self.reconnects = 0
        self.done = asyncio.Event()
        self.all_ready = asyncio.Event()
        self.expected_ready = 0
        self.expected_complete = 0
        self.cpu_at_ready = time.process_time()

    def mark_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.expected_ready:
            self.all_ready.set()

    def measuring(self) -> None:
        """Every reader is ready: the load generator's own CPU counts from here (`cpu_s`)."""
        self.cpu_at_ready = time.process_time()

    def summary(self) -> dict[str, Any]:
        return {
            "cpu_s": time.process_time() - self.cpu_at_ready,
            "arrivals": self.arrivals,
            "complete": self.complete,
            "expected_complete": self.expected_complete,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "unexpected": self.unexpected,
            "closed_early": self.closed_early,
            "reconnects": self.reconnects,
        }


class ReaderCheck:
    """One reader's progress through its expected lines (`expected`: line indexes, ascending)."""

    def __init__(self, stats: Stats, expected: Sequence[int] | None = None) -> None:
        self.stats = stats
        self.expected: Sequence[int] = range(stats.lines) if expected is None else expected
        self._wanted = set(self.expected) if expected is not None else None
        self.position = 0  # index into self.expected of the next line due
        self.finished = False
        if not self.expected:
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        self.stats.complete += 1
        if self.stats.complete >= self.stats.expected_complete:
            self.stats.done.set()

    def arrived(self, index: int, now: float) -> None:
        """Line `index` reached this reader at `now` (time.time())."""
        stats = self.stats
        if index < 0 or index >= stats.lines or (self._wanted is not None and index not in self._wanted):
            stats.unexpected += 1
            return
        due = self.expected[self.position] if self.position < len(self.expected) else stats.lines
        if index == due:
            stats.arrivals[index].append(now)
            self.position += 1
        elif index < due:
            stats.duplicates += 1
            return
        else:
            # Lines before it were skipped: count it once and carry on after it.
            stats.out_of_order += 1
            stats.arrivals[index].append(now)
            while self.position < len(self.expected) and self.expected[self.position] <= index:
                self.position += 1
        if self.position == len(self.expected) and not self.finished:
            self._finish()
