"""Stopping tasks for sure (flashwire/core/tasks.py): a task that swallows a cancellation is
cancelled again until it ends; one that never ends is reported, not waited for forever."""

from __future__ import annotations

import asyncio
import time

from flashwire.core.tasks import cancel_until_done


async def _swallows_first_cancel(ended: list[str]) -> None:
    """Like a loop whose cancellation came out of a library as a timeout: it carries on once."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # taken for a timeout: one more round
    try:
        await asyncio.sleep(3600)
    finally:
        ended.append("second cancel")


async def _ends_only_when_told(told: asyncio.Event) -> None:
    """Swallows every cancellation until `told` is set (so that the test can end it)."""
    while not told.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


async def test_a_task_that_swallowed_one_cancel_is_cancelled_again_and_ends() -> None:
    ended: list[str] = []
    task = asyncio.create_task(_swallows_first_cancel(ended))
    await asyncio.sleep(0)
    # One cancel, as a plain `task.cancel(); await task` would do, leaves it running.
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done
    assert await cancel_until_done([task], timeout_s=5, again_s=0.05) == set()
    assert task.done() and ended == ["second cancel"]


async def test_a_task_that_never_ends_is_returned_after_the_timeout() -> None:
    told = asyncio.Event()
    stubborn = asyncio.create_task(_ends_only_when_told(told))
    polite = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    started = time.monotonic()
    pending = await cancel_until_done([stubborn, polite], timeout_s=0.3, again_s=0.05)
    assert pending == {stubborn}
    assert polite.cancelled()
    assert time.monotonic() - started < 2
    told.set()
    stubborn.cancel()
    await asyncio.wait({stubborn}, timeout=1)
    assert stubborn.done()
