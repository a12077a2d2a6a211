"""`flashwire worker`: logging, then the supervisor (workers/supervisor.py) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from flashwire.core.settings import Settings
from flashwire.workers.supervisor import WorkerSupervisor


def run_worker(settings: Settings | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM; Redis outages only pause it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    # arq logs every cron run at INFO: once a second for expiry is noise.
    logging.getLogger("arq").setLevel(logging.WARNING)
    asyncio.run(WorkerSupervisor(settings or Settings.from_env()).run())
