"""A connection's receive queue and writable flag (service/ws_waiting.py) keep asyncio.Queue's and
asyncio.Event's behaviour where uvicorn relies on it: order, no message lost to a cancelled wait,
every waiting sender woken."""

from __future__ import annotations

import asyncio

from flashwire.service.ws_waiting import Flag, MessageQueue


async def test_messages_come_out_in_order_and_wake_the_waiting_consumer() -> None:
    """A `get` waiting on an empty queue gets the first message put; the rest follow in order."""
    queue: MessageQueue[str] = MessageQueue()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    for message in ("connect", "receive", "disconnect"):
        queue.put_nowait(message)
    assert await waiting == "connect"
    assert [await queue.get(), await queue.get()] == ["receive", "disconnect"]
    assert queue.empty() and queue.qsize() == 0


async def test_a_cancelled_get_takes_nothing_from_the_queue() -> None:
    """A wait cancelled (a subscribe timeout) after the message came leaves it for the next `get`."""
    queue: MessageQueue[str] = MessageQueue()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("disconnect")
    waiting.cancel()  # before it ran again to take the message
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    assert queue.qsize() == 1
    assert await asyncio.wait_for(queue.get(), 1) == "disconnect"


async def test_setting_the_flag_wakes_every_waiter_and_a_cancelled_one_is_forgotten() -> None:
    """Senders blocked while the transport is over its high-water mark all go on once it drains."""
    flag = Flag()
    assert flag.is_set()
    await asyncio.wait_for(flag.wait(), 1)  # set: returns at once
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.gather(waiters[0], return_exceptions=True)
    assert not any(waiter.done() for waiter in waiters[1:])
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters[1:]), 1)
    assert flag.is_set()
