"""Soak: the model-based delivery run of the test suite, longer and larger.

    python -m bench.soak --minutes 10 --readers 2000
    python -m bench.soak --minutes 3 --readers 500 --seed 42 --fault-every 10 --keep

The same harness as tests/test_delivery_model.py (tests/fault_run.py): one redis-server with
its append-only file, `--nodes` service nodes and `--workers` workers; `--readers` readers
(a share of them over SSE, resuming with the browser's Last-Event-ID, the rest over WebSocket
with `since=`) with random edition, topic and urgency filters; `--editors` editor tasks posting,
correcting (moving lines into and out of filters) and retracting at about `--rate` actions per
second, every request retried with its Idempotency-Key until 201; and a fault about every
`--fault-every` seconds, in rounds of node SIGKILL, worker SIGKILL, and Redis SIGKILL (with a
node killed during the outage) and restart. Then the checker of tests/delivery_model.py: no
gap, no duplicate, no reorder, correct snapshots and final state for every reader. Exits 1 on
any violation; the process logs are kept on failure (or with --keep).

Memory: every message is kept raw until the check, about 600 bytes each; 2,000 readers at the
default rate for 10 minutes is a few million messages (a few GB).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.fault_run import RunConfig, run_fault_model


def _raise_fd_limit() -> None:
    """Each reader holds a socket: take the hard limit of open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def config_from(args: argparse.Namespace, work_dir: Path) -> RunConfig:
    """The harness configuration for the command line."""
    sse = round(args.readers * args.sse_share)
    # Each editor acts, on average, every editors / rate seconds (waits uniform in [0.5, 1.5] x that).
    mean_pause_s = args.editors / args.rate
    return RunConfig(
        seed=args.seed,
        work_dir=work_dir,
        nodes=args.nodes,
        workers=args.workers,
        ws_readers=args.readers - sse,
        sse_readers=sse,
        editors=args.editors,
        seed_lines_per_editor=args.seed_lines // args.editors,
        edit_s=args.minutes * 60,
        action_pause_s=(mean_pause_s / 2, mean_pause_s * 3 / 2),
        max_live_per_editor=args.max_live_per_editor,
        fault_every_s=args.fault_every,
        heartbeat_s=args.heartbeat,
        reader_batch=100,
        backoff_max_s=8.0,
        action_deadline_s=180.0,
        quiet_timeout_s=180.0,
        grace_s=2.0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the editing phase")
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--sse-share", type=float, default=0.3, help="share of the readers on SSE")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--editors", type=int, default=6)
    parser.add_argument("--rate", type=float, default=8.0, help="editorial actions per second, about")
    parser.add_argument(
        "--seed-lines", type=int, default=240, help="lines posted to 'en' before readers connect (cap > 200)"
    )
    parser.add_argument(
        "--max-live-per-editor", type=int, default=60, help="an editor holding this many live lines retracts"
    )
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds between faults, about")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="FLASHWIRE_HEARTBEAT_S of the nodes")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="for logs and Redis data (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir even when the run passes")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**9)
    _raise_fd_limit()
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="flashwire-soak-"))
    config = config_from(args, work_dir)
    print(
        f"soak: seed {args.seed}, {args.minutes:g} min, {config.ws_readers} WebSocket + {config.sse_readers} SSE "
        f"readers, {config.nodes} nodes, {config.workers} workers, {config.editors} editors at ~{args.rate:g}/s, "
        f"a fault every ~{args.fault_every:g}s; logs in {work_dir}",
        flush=True,
    )
    began = time.monotonic()
    outcome = asyncio.run(run_fault_model(config, progress=lambda text: print(text, flush=True)))
    print(outcome.failure_text() if not outcome.ok else outcome.summary())
    print(f"wall time {time.monotonic() - began:.0f}s; {'PASS' if outcome.ok else 'FAIL'}")
    if outcome.ok and not args.keep and args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        print(f"logs and Redis data kept in {work_dir}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
