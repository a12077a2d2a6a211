"""flashwire.workers.outage: which Redis errors the worker waits out as an outage."""

from __future__ import annotations

import logging
from typing import Any


def test_a_connection_lost_while_watching_is_an_outage_for_the_worker() -> None:
    """redis-py reports a connection lost during arq's WATCH (enqueue_job) as a WatchError; the worker's
    parts must wait it out like any lost connection, not log it as an unexpected error."""
    from redis.exceptions import WatchError

    from flashwire.workers.outage import REDIS_DOWN

    assert isinstance(WatchError("A ConnectionError occurred on while watching one or more keys"), REDIS_DOWN)


def _orphan(error: Exception) -> None:
    """On a loop with the worker's exception handler: a task that fails with `error` and is never
    awaited (as arq's shielded finish_job is, when an outage cancels the job around it)."""
    import asyncio
    import gc

    from flashwire.workers.outage import quiet_orphaned_outage_errors

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(quiet_orphaned_outage_errors)

        async def finish_job() -> None:
            raise error

        task = loop.create_task(finish_job(), name="finish-job")
        await asyncio.sleep(0)
        assert task.done()
        del task
        gc.collect()  # asyncio reports an exception never retrieved when the task is collected

    asyncio.run(main())


def test_a_task_orphaned_by_a_redis_outage_is_one_warning_not_a_traceback(caplog: Any) -> None:
    """arq's finish_job failing on a lost connection after its job was cancelled: one WARNING line
    naming the task, no ERROR and no traceback (test_worker_outage checks the worker's log for
    tracebacks; this made it fail once in a full run)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    caplog.set_level(logging.WARNING)
    _orphan(RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connect call failed"))
    assert [(r.levelname, r.name) for r in caplog.records] == [("WARNING", "flashwire.workers.outage")]
    assert "finish-job" in caplog.records[0].getMessage()
    assert all(record.exc_info is None for record in caplog.records)


def test_any_other_orphaned_failure_still_gets_asyncios_report(caplog: Any) -> None:
    """The handler quiets only outages: another error keeps asyncio's ERROR with its traceback."""
    caplog.set_level(logging.WARNING)
    _orphan(ValueError("a bug"))
    errors = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "never retrieved" in errors[0].getMessage()
    assert errors[0].exc_info is not None
