"""`flashwire worker`: logging (flashwire/core/logs.py), then the supervisor (workers/supervisor.py)
until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from flashwire.core.logs import configure_logging
from flashwire.core.settings import Settings
from flashwire.workers.supervisor import WorkerSupervisor


def run_worker(settings: Settings | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM; Redis outages only pause it."""
    settings = settings or Settings.from_env()
    configure_logging("worker", settings.log_format)
    # arq logs every cron run at INFO: once a second for expiry is noise.
    logging.getLogger("arq").setLevel(logging.WARNING)
    asyncio.run(WorkerSupervisor(settings).run())
