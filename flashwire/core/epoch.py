"""Ticker epochs: noticing that the history a node holds in memory is no longer Redis's.

Redis keeps a generation id of the tickers (`Keys.epoch`) next to their data. Whoever
writes the first ticker data of a generation creates it (the worker's commit does
`SET NX` in the same script as its XADD; a node does it when it finds none), so it
vanishes with the data: FLUSHALL, a restart without persistence, a failover to a
replica that never had it. A changed or missing epoch therefore means "everything you
remember may be gone".

A failover to a replica that lacks only the newest entries keeps the epoch (it was
replicated long ago), so a node also checks that the last entry it read of each
edition is still in the log: if it is not, the ticker went back in time.

Either way the node must forget its in-memory history and send reset snapshots
(docs/protocol.md, "Ticker epochs and reset snapshots").
"""

from __future__ import annotations

import logging
import secrets

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.keys import Keys

log = logging.getLogger(__name__)

HISTORY_CHANGED = "the ticker's history changed (Redis lost data or failed over)"
# The epoch of a Redis that has none and refuses writes (read-only replica, full, NOREPLICAS):
# nodes can still serve what it holds; the first write of the ticker data creates a real one.
NO_EPOCH = ""


def new_epoch() -> str:
    """A fresh generation id: 16 hex digits, random, so two generations never share one."""
    return secrets.token_hex(8)


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def epoch_text(raw: bytes | str | None) -> str:
    """An epoch as read from Redis; a missing one is NO_EPOCH."""
    return _text(raw) or NO_EPOCH


async def current_epoch(redis: Redis, keys: Keys, *, primary: Redis | None = None) -> str:
    """The tickers' epoch, creating it (SET NX, so every node agrees on one) if there is none.

    Reading is a GET; only a missing epoch is written. A Redis that refuses the write (a
    read-only replica, `min-replicas-to-write`, a full memory, a failing disk) gets NO_EPOCH
    and a warning: it must not stop the node from serving what Redis can still be read.

    A node that reads a replica passes the `primary`: a missing epoch is created there and read
    back from there (the replica has it a moment later), so the node does not take the epoch's
    creation by the first write for a change of history and reset its readers.
    """
    for _ in range(3):
        epoch = epoch_text(await redis.get(keys.epoch))
        if epoch:
            return epoch
        if primary is not None:
            try:
                await primary.set(keys.epoch, new_epoch(), nx=True)
                return epoch_text(await primary.get(keys.epoch))
            except ResponseError as exc:
                log.warning("ticker epoch missing and the primary refuses to store one (%s)", exc)
                return NO_EPOCH
        try:
            await redis.set(keys.epoch, new_epoch(), nx=True)
        except ResponseError as exc:
            log.warning("ticker epoch missing and Redis refuses to store one (%s)", exc)
            return NO_EPOCH
    return NO_EPOCH  # deleted again each time (FLUSHALL in a loop): the next check retries


async def history_intact(redis: Redis, keys: Keys, positions: dict[str, str]) -> str | None:
    """None if every edition's log still holds the entry at `positions` (edition -> last entry id
    read, "0-0" for none), else the first edition whose log lost it."""
    checked = [(edition, cursor) for edition, cursor in positions.items() if cursor != "0-0"]
    if not checked:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        for edition, cursor in checked:
            pipe.xrange(keys.ticker(edition), min=cursor, max=cursor, count=1)
        found = await pipe.execute()
    for (edition, _), entries in zip(checked, found, strict=True):
        if not entries:
            return edition
    return None
