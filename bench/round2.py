"""Issue 14's table, every row measured once beside its reference, in one invocation.

    python -m bench.round2                      # the issue's scales: 5.9 minutes here (*)
    python -m bench.round2 --scale 0.2          # a quick pass: a fifth of the readers
    python -m bench.round2 --only 1k,filters    # some scenarios only
    python -m bench.round2 --lock /tmp/flashwire-bench.lock   # each scenario alone on a shared machine

(*) The whole pass at scale 1 on the 2-core machine with nothing else running (2026-12-08). On a
shared machine the scenarios alone took longer: 10k 1.4-2.5 minutes, 15k and filters 3.0 together,
30k 2.8; the pass at --scale 0.2 5.7-8.1. Many thousands of connections in a few minutes leave
their sockets in TIME_WAIT: a second pass started at once failed to connect its filters scenario's
readers (25,000 in TIME_WAIT); give it a minute.

Runs bench.fanout (in this process: its servers and load generators are processes of their own)
once per scenario, each on a private redis-server and fresh processes, and bench.burst (another
helper's, if it is in the tree; as a process of its own) for the burst row. Then prints one
markdown table, measure / Flashwire / reference or WebSocket / ratio / the issue's goal, and after
it every scenario's own report (its exact command and full table), so that both can be recorded.

| scenario | command (at --scale 1) | rows |
|---|---|---|
| 1k | `bench.fanout --subscribers 1000 --lines 20` | POST→last vs the reference at 1,000; POST→first median beside the reference's |
| 5k | `bench.fanout --subscribers 5000` | POST→last vs the reference at 5,000 |
| 10k | `bench.fanout --subscribers 10000 --transport ws,sse` | WebSocket POST→last vs the reference at 10,000; SSE vs WebSocket (POST→last, first, CPU per delivery, RSS per idle reader) |
| 15k | `bench.fanout --subscribers 15000 --lines 3` | RSS per idle WebSocket reader beside the reference's |
| burst | `bench.burst --subscribers 5000 --lines 200 --editors 4` | the 200 POSTs, the last delivery after them, lost, closed as slow |
| filters | `bench.fanout --subscribers 5000 --filters random` | CPU per delivered message vs unfiltered; worst line vs the median |
| 30k | `bench.fanout --subscribers 30000 --workers 2 --reference-processes 2 --interval 1.0` | POST→last vs 2 reference processes, every line to all |

Every fanout scenario posts `--lines` lines (10 by default, 20 for the 1k one, whose POST→first
median is a row of its own), one every 0.5 s unless said. Readers are scaled by `--scale` (at
least 100); the burst's 200 lines are not. The POST→first figures are taken from a client: the
bench process times each POST from just before sending it, and the load generators stamp each
frame's arrival with the same wall clock (time.time(), one machine), as they do for every figure.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench import fanout

SCENARIOS = ("1k", "5k", "10k", "15k", "burst", "filters", "30k")


@dataclass
class Row:
    measure: str
    flashwire: str
    other: str
    ratio: str
    goal: str


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, flashwire: str, other: str, ratio: str, goal: str) -> None:
        self.rows.append(Row(measure, flashwire, other, ratio, goal))


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _times(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def _kib(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} KiB"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} µs"


def _lost(result: fanout.Result) -> str:
    return f"lost {result.lost}, duplicated {result.duplicated}"


class Round:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.table = Table()

    def readers(self, count: int) -> int:
        return max(100, round(count * float(self.args.scale)))

    def measure(self, *options: str) -> fanout.Outcome:
        argv = [*options, *(["--seed", str(self.args.seed)] if "--filters" in options else [])]
        command = "python -m bench.fanout " + " ".join(argv)
        print(f"round2: {command}", file=sys.stderr, flush=True)
        outcome = fanout.run(fanout.build_parser().parse_args(argv), command)
        self.table.details += ["", *outcome.lines]
        return outcome

    def websocket_vs_reference(self, outcome: fanout.Outcome, readers: int, goal: str) -> None:
        flashwire, reference = outcome.find(), outcome.find(role="reference")
        if flashwire is None or reference is None:
            return
        self.table.add(
            f"WebSocket fan-out, {readers:,} readers, one process, POST→last (median of lines)",
            f"{_ms(flashwire.last_ms)} ({_lost(flashwire)})",
            _ms(reference.last_ms),
            _times(flashwire.last_ms, reference.last_ms),
            goal,
        )

    def run_1k(self) -> None:
        readers = self.readers(1000)
        lines = str(self.args.lines * 2)
        outcome = self.measure("--subscribers", str(readers), "--lines", lines, "--interval", "0.5")
        self.websocket_vs_reference(outcome, readers, "≤ 1.05×")
        flashwire, reference = outcome.find(), outcome.find(role="reference")
        if flashwire is not None and reference is not None:
            self.table.add(
                f"POST→first delivery, median, {readers:,} readers (from the posting client)",
                _ms(flashwire.first_ms),
                _ms(reference.first_ms),
                _times(flashwire.first_ms, reference.first_ms),
                "≤ 2.5 ms",
            )

    def run_5k(self) -> None:
        readers = self.readers(5000)
        outcome = self.measure("--subscribers", str(readers), "--lines", str(self.args.lines))
        self.websocket_vs_reference(outcome, readers, "≤ 1.05×")

    def run_10k(self) -> None:
        readers = self.readers(10_000)
        outcome = self.measure(
            "--subscribers", str(readers), "--lines", str(self.args.lines), "--transport", "ws,sse"
        )
        self.websocket_vs_reference(outcome, readers, "hold ≤ 1.0×")
        ws, sse = outcome.find(transport="ws"), outcome.find(transport="sse")
        if ws is None or sse is None:
            return
        self.table.add(
            f"SSE fan-out, {readers:,} readers, POST→last vs WebSocket in the same run",
            f"{_ms(sse.last_ms)} ({_lost(sse)})",
            _ms(ws.last_ms),
            _times(sse.last_ms, ws.last_ms),
            "≤ 1.2×",
        )
        self.table.add(
            f"SSE POST→first delivery, median, {readers:,} readers, vs WebSocket",
            _ms(sse.first_ms),
            _ms(ws.first_ms),
            _times(sse.first_ms, ws.first_ms),
            "—",
        )
        self.table.add(
            f"SSE CPU per delivery, {readers:,} readers, vs WebSocket (in brackets: the load generators')",
            f"{_us(sse.cpu_per_delivery_us)} ({_us(fanout.client_cpu_us(sse))})",
            f"{_us(ws.cpu_per_delivery_us)} ({_us(fanout.client_cpu_us(ws))})",
            _times(sse.cpu_per_delivery_us, ws.cpu_per_delivery_us),
            "—",
        )
        self.table.add(
            f"memory per idle SSE reader (RSS, {readers:,} in one process), vs WebSocket",
            _kib(sse.rss_per_conn_kib),
            _kib(ws.rss_per_conn_kib),
            _times(sse.rss_per_conn_kib, ws.rss_per_conn_kib),
            "≤ 14 KiB",
        )

    def run_15k(self) -> None:
        readers = self.readers(15_000)
        outcome = self.measure("--subscribers", str(readers), "--lines", "3")
        flashwire, reference = outcome.find(), outcome.find(role="reference")
        if flashwire is None or reference is None:
            return
        self.table.add(
            f"memory per idle WebSocket reader (RSS, {readers:,} in one process), vs the reference",
            _kib(flashwire.rss_per_conn_kib),
            _kib(reference.rss_per_conn_kib),
            _times(flashwire.rss_per_conn_kib, reference.rss_per_conn_kib),
            "≤ 14 KiB",
        )

    def run_filters(self) -> None:
        readers = self.readers(5000)
        outcome = self.measure(
            "--subscribers", str(readers), "--lines", str(self.args.lines), "--filters", "random",
            "--no-reference",
        )  # fmt: skip
        plain, chosen = outcome.find(), outcome.find(filtered=True)
        if plain is None or chosen is None or not chosen.lasts_ms:
            return
        self.table.add(
            f"{readers:,} readers each with its own random filter: CPU per delivered message vs unfiltered",
            f"{_us(chosen.cpu_per_delivery_us)} ({chosen.deliveries:,} of {chosen.expected:,} due, "
            f"unexpected {chosen.unexpected}, {_lost(chosen)})",
            _us(plain.cpu_per_delivery_us),
            _times(chosen.cpu_per_delivery_us, plain.cpu_per_delivery_us),
            "≤ 1.3×",
        )
        median = statistics.median(chosen.lasts_ms)
        self.table.add(
            "the same: slowest line to its last matching reader vs the median line",
            _ms(max(chosen.lasts_ms)),
            f"{_ms(median)} (median)",
            _times(max(chosen.lasts_ms), median),
            "≤ 2×",
        )

    def run_30k(self) -> None:
        readers = self.readers(30_000)
        outcome = self.measure(
            "--subscribers", str(readers), "--lines", str(self.args.lines), "--interval", "1.0",
            "--workers", "2", "--reference-processes", "2",
        )  # fmt: skip
        flashwire, reference = outcome.find(), outcome.find(role="reference")
        if flashwire is None or reference is None:
            return
        spread = " / ".join(f"{n:,}" for n in flashwire.per_process)
        self.table.add(
            f"a line to {readers:,} readers, `serve --workers 2`, POST→last (median) vs 2 reference processes",
            f"{_ms(flashwire.last_ms)} ({_lost(flashwire)}; readers per process {spread or '—'})",
            f"{_ms(reference.last_ms)} ({_lost(reference)})",
            _times(flashwire.last_ms, reference.last_ms),
            "every line to all",
        )

    def run_burst(self) -> None:
        if importlib.util.find_spec("bench.burst") is None:
            self.table.notes.append(
                "The burst row is left out: bench/burst.py is not in this tree (another change adds it)."
            )
            return
        readers = self.readers(5000)
        argv = ["--subscribers", str(readers), "--lines", "200", "--editors", "4"]
        command = "python -m bench.burst " + " ".join(argv)
        print(f"round2: {command}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "bench.burst", *argv], capture_output=True, text=True, timeout=900
        )
        self.table.details += ["", *done.stdout.strip().splitlines()]
        cells = burst_cells(done.stdout)
        if done.returncode != 0 or cells is None:
            self.table.notes.append(
                f"The burst row is left out: `{command}` exited with {done.returncode} or printed no table "
                f"this script could read ({done.stderr.strip().splitlines()[-1:] or 'no error output'})."
            )
            return
        self.table.add(
            f"a burst of 200 lines by 4 editors at once, {readers:,} readers: first POST sent → last answered",
            cells.get("first POST sent → last answered", "—"),
            "—",
            "—",
            "≤ 1.5 s",
        )
        self.table.add(
            "the same: last delivery after the last POST answered",
            f"{cells.get('last delivery after it', '—')} (lost {cells.get('lost', '—')}, duplicated "
            f"{cells.get('duplicated', '—')}, closed {cells.get('closed (seen / slow_closed)', '—')})",
            "—",
            "—",
            "≤ 3 s; 0 lost, none closed",
        )


def burst_cells(report: str) -> dict[str, str] | None:
    """The row of bench.burst's table with readers (`unfiltered`), by its header's column names;
    None if absent. bench.burst first posts with no readers (its posting floor): that row is not
    the burst's."""
    lines = [line.strip() for line in report.splitlines() if line.strip().startswith("|")]
    for position, line in enumerate(lines):
        if "last answered" not in line:
            continue
        names = [cell.strip() for cell in line.strip("|").split("|")]
        for row in lines[position + 2 :]:
            values = [cell.strip() for cell in row.strip("|").split("|")]
            if values and values[0] == "unfiltered":
                return dict(zip(names, values, strict=False))
    return None


@contextmanager
def _held(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def render(args: argparse.Namespace, command: str, table: Table, elapsed_s: float) -> list[str]:
    import redis
    import uvicorn
    import websockets

    lines = [
        f"### `{command}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, uvicorn {uvicorn.__version__}, websockets "
        f"{getattr(websockets, '__version__', '?')}, redis-py {redis.__version__}; scale {args.scale}; "
        f"{elapsed_s / 60:.1f} minutes",
        "",
        "| measure | Flashwire | reference / WebSocket | ratio | goal (issue 14) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.measure} | {r.flashwire} | {r.other} | {r.ratio} | {r.goal} |" for r in table.rows]
    for note in table.notes:
        lines += ["", note]
    return [*lines, "", "#### Each scenario's own report", *table.details]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.round2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", type=float, default=1.0, help="readers × this (at least 100 per scenario)")
    parser.add_argument(
        "--lines", type=int, default=10, help="lines per fanout half (the 1k scenario: twice)"
    )
    parser.add_argument("--seed", type=int, default=14, help="the random filters' seed")
    parser.add_argument("--only", help=f"comma-separated scenarios, of {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--lock",
        help="hold this file's flock(2) during each scenario, not between them: on a machine shared by "
        "several benches, each scenario runs alone and the others may take turns in between",
    )
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose among {', '.join(SCENARIOS)}")
    round_ = Round(args)
    steps: dict[str, Callable[[], None]] = {
        "1k": round_.run_1k,
        "5k": round_.run_5k,
        "10k": round_.run_10k,
        "15k": round_.run_15k,
        "burst": round_.run_burst,
        "filters": round_.run_filters,
        "30k": round_.run_30k,
    }
    started = time.monotonic()
    for name in SCENARIOS:
        if name in chosen:
            with _held(args.lock):
                steps[name]()
    command = "python -m bench.round2 " + " ".join(sys.argv[1:])
    print("\n".join(render(args, command, round_.table, time.monotonic() - started)))


if __name__ == "__main__":
    main()
