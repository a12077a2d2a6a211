"""Moving a deployment's keys from the untagged layout to the hash-tagged one (Redis Cluster).

Until the Cluster work every key was `<prefix>:<rest>`. Keys that a script or a multi-key read
touches together now share a hash tag (flashwire/core/keys.py; docs/architecture.md, "Redis key
layout"): `<prefix>:desk` became `{<prefix>}:desk`, `<prefix>:push:reg:<id>` became
`{<prefix>:push}:reg:<id>`, and so on; families touched one key at a time kept their names.

Nothing is renamed behind an operator's back: `flashwire migrate-keys` does it once, with the
service and workers stopped, on the single Redis server the deployment already uses (RENAME
keeps a stream's consumer groups, a key's TTL and its type; it only works within one slot, so it
runs before moving to a Cluster, never across one). Service nodes and workers refuse to start
while old-layout data is there (`refuse_old_layout`), so an upgrade that skips the command stops
with a clear message instead of starting on empty tickers beside the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.keys import Keys

# First segment of `<prefix>:<rest>` of every family now under the `{<prefix>}` tag.
TAGGED_FAMILIES = frozenset(
    {
        "desk",
        "ticker",
        "ticker-origin",
        "line",
        "lines",
        "history",
        "revisions",
        "live",
        "scheduled",
        "killed",
        "audit",
        "expiry",
        "idem",
        "epoch",
        "workers",
        "wh",
    }
)
# `<prefix>:push:<family>:...` now under the `{<prefix>:push}` tag (the push registry).
PUSH_REGISTRY_FAMILIES = frozenset({"reg", "targets", "client"})
# Old-layout keys every deployment that ever ran has (the desk and its cursor, the tickers'
# epoch, the line index): what start-up looks for, without scanning the keyspace.
OLD_LAYOUT_MARKERS = ("desk", "desk:applied", "epoch", "lines")
SCAN_COUNT = 1_000


class OldKeyLayout(RuntimeError):
    """Data in the untagged key layout is present: run `flashwire migrate-keys` first."""


@dataclass
class Migration:
    """What `migrate_key_layout` did: keys renamed, and old keys left because the new name exists."""

    renamed: int = 0
    conflicts: list[str] = field(default_factory=list)


def new_name(keys: Keys, old: str) -> str | None:
    """The hash-tagged name of an old-layout key, or None if its name did not change."""
    head = keys.prefix + ":"
    if not old.startswith(head):
        return None
    rest = old[len(head) :]
    family, _, tail = rest.partition(":")
    if family in TAGGED_FAMILIES:
        return f"{keys.tag}:{rest}"
    if family == "push":
        sub = tail.partition(":")[0]
        if sub == "running":
            return f"{keys.tag}:{rest}"
        if sub in PUSH_REGISTRY_FAMILIES:
            return f"{keys.push_tag}:{tail}"
    return None


async def migrate_key_layout(redis: Redis, keys: Keys) -> Migration:
    """Rename every old-layout key of `keys.prefix` to its new name (RENAMENX: a key whose new name
    exists already is left alone and reported). Safe to run again, and by two processes at once."""
    done = Migration()
    async for raw in redis.scan_iter(match=f"{keys.prefix}:*", count=SCAN_COUNT):
        old = raw.decode() if isinstance(raw, bytes) else str(raw)
        target = new_name(keys, old)
        if target is None:
            continue
        try:
            moved = await redis.renamenx(old, target)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                continue  # renamed by another run, or expired, since the scan saw it
            raise
        if moved:
            done.renamed += 1
        else:
            done.conflicts.append(old)
    return done


async def refuse_old_layout(redis: Redis, keys: Keys) -> None:
    """Raise OldKeyLayout if the deployment's data is still in the old layout."""
    for marker in OLD_LAYOUT_MARKERS:
        # One key per call: the old names are in different slots of a Cluster.
        old = f"{keys.prefix}:{marker}"
        if not await redis.exists(old):
            continue
        raise OldKeyLayout(
            f"Redis holds Flashwire data in the old key layout (key {old!r}): "
            "stop every service node and worker and run `flashwire migrate-keys` once "
            "(docs/operations.md, 'Redis Cluster')"
        )
