"""Push registrations in Redis: stored by the service, read and pruned by the worker.

Layout (flashwire/core/keys.py): one JSON document per registration; per edition and minimum
urgency a sorted set of registration ids (scores all 0, walked in id order with ZRANGEBYLEX, so
a fan-out that pages through it while readers register or leave neither skips nor repeats an
id that stays); per client address the set of its registration ids (the bound).

A registration's id is derived from its target (platform and endpoint or token), so the same
device registering again replaces its registration instead of adding one: registering is
idempotent. Whoever holds the target can take it over that way (and gets a new secret);
holding the push token is what owning the device's push channel means; a takeover counts against
the new address's bound. Only the secret's SHA-256 is stored. A registration not stored again for
REGISTRATION_TTL_S (90 days) expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from flashwire.core.keys import Keys
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.push_models import SECRET_PREFIX, RegistrationBase, UpdateBase

URGENCIES = ("flash", "urgent", "routine")
# A registration not stored again for this long expires: apps and pages register again when they
# start (it is idempotent), so only targets abandoned for months go (docs/push.md).
REGISTRATION_TTL_S = 90 * 86_400


def registration_id(platform: str, address: str) -> str:
    """22 characters of base64url(SHA-256(platform, endpoint or token)): stable per target."""
    digest = hashlib.sha256(f"{platform}\n{address}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RegistrationLimit(Exception):
    """The client address holds FLASHWIRE_PUSH_MAX_REGISTRATIONS_PER_CLIENT registrations already."""


@dataclass(frozen=True)
class Stored:
    """A registration as stored: the record (JSON document) and whether it was new."""

    record: dict[str, Any]
    created: bool


def urgencies_reached(urgency: str) -> tuple[str, ...]:
    """The minimum-urgency sets a line of `urgency` goes to: flash -> all three, routine -> routine."""
    rank = URGENCY_RANK.get(urgency, 2)
    return tuple(u for u in URGENCIES if URGENCY_RANK[u] >= rank)


class PushRegistry:
    """Registrations over one Redis client (the service's or the worker's)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def _index_keys(self, record: dict[str, Any]) -> list[str]:
        return [self._keys.push_targets(edition, record["urgency"]) for edition in record["editions"]]

    async def register(
        self, request: RegistrationBase, *, client: str, now_ms: int, max_per_client: int
    ) -> tuple[Stored, str]:
        """Store a registration (replacing the same target's), answer it and its new secret.

        Raises RegistrationLimit when `client` holds `max_per_client` others already."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(24)
        address = request.address
        reg_id = registration_id(request.platform, address)
        record: dict[str, Any] = {
            "id": reg_id,
            "platform": request.platform,
            "token": address,
            "p256dh": request.subscription.keys.p256dh if request.subscription else "",
            "auth": request.subscription.keys.auth if request.subscription else "",
            "environment": request.environment,
            "editions": sorted(set(request.editions)),
            "topics": sorted(set(request.topics)),
            "urgency": request.urgency,
            "language": request.language,
            "quiet_hours": request.quiet_hours.model_dump() if request.quiet_hours else None,
            "secret_hash": _secret_hash(secret),
            "client": client,
            "registered_at_ms": now_ms,
        }
        stored = await self._store(record, client=client, max_per_client=max_per_client)
        return stored, secret

    async def _store(self, record: dict[str, Any], *, client: str, max_per_client: int | None) -> Stored:
        key = self._keys.push_registration(record["id"])
        client_key = self._keys.push_client(client)
        now = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, client_key)
                    raw = await pipe.get(key)
                    old = orjson.loads(raw) if raw else None
                    # A new target, or one taken over from another address, counts against this one.
                    if max_per_client is not None and (old is None or old["client"] != client):
                        live = await pipe.zcount(client_key, now - REGISTRATION_TTL_S * 1000, "+inf")
                        if live >= max_per_client:
                            raise RegistrationLimit
                    pipe.multi()
                    if old is not None:
                        for index in self._index_keys(old):
                            pipe.zrem(index, record["id"])
                        pipe.zrem(self._keys.push_client(old["client"]), record["id"])
                    for index in self._index_keys(record):
                        pipe.zadd(index, {record["id"]: 0})
                    # Scored by when it was last stored: expired ones stop counting (and are pruned).
                    pipe.zadd(client_key, {record["id"]: now})
                    pipe.zremrangebyscore(client_key, "-inf", now - REGISTRATION_TTL_S * 1000)
                    pipe.expire(client_key, REGISTRATION_TTL_S)
                    pipe.set(key, orjson.dumps(record), ex=REGISTRATION_TTL_S)
                    await pipe.execute()
                    return Stored(record, created=old is None)
                except WatchError:
                    continue

    async def forget_missing(self, edition: str, ids: list[str]) -> None:
        """Take ids whose registration has expired out of the edition's index sets (a fan-out
        found them missing; their client sets prune them by score)."""
        if ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for urgency in URGENCIES:
                    pipe.zrem(self._keys.push_targets(edition, urgency), *ids)
                await pipe.execute()

    async def get(self, reg_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.push_registration(reg_id))
        return orjson.loads(raw) if raw else None

    async def authorised(self, reg_id: str, secret: str) -> dict[str, Any] | None:
        """The registration if `secret` is its secret, else None (unknown id or wrong secret alike)."""
        record = await self.get(reg_id)
        if record is None or not hmac.compare_digest(record["secret_hash"], _secret_hash(secret)):
            return None
        return record

    async def update(self, record: dict[str, Any], choices: UpdateBase) -> dict[str, Any]:
        """Replace the reader's choices of an existing registration; the target stays."""
        updated = {
            **record,
            "editions": sorted(set(choices.editions)),
            "topics": sorted(set(choices.topics)),
            "urgency": choices.urgency,
            "language": choices.language,
            "quiet_hours": choices.quiet_hours.model_dump() if choices.quiet_hours else None,
        }
        return (await self._store(updated, client=record["client"], max_per_client=None)).record

    async def remove(self, reg_id: str, *, registered_before_ms: int | None = None) -> bool:
        """Delete a registration and its index entries; False if it was not there.

        With `registered_before_ms`, only a registration made before that time is removed: a push
        service's "gone" about a token registered again since then is about the old registration
        (APNs 410 `timestamp`, ../shared/PITFALLS.md 1.16)."""
        key = self._keys.push_registration(reg_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if not raw:
                        return False
                    record = orjson.loads(raw)
                    if registered_before_ms is not None and record["registered_at_ms"] > registered_before_ms:
                        return False
                    pipe.multi()
                    for index in self._index_keys(record):
                        pipe.zrem(index, reg_id)
                    pipe.zrem(self._keys.push_client(record["client"]), reg_id)
                    pipe.delete(key)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    async def page(self, edition: str, urgency: str, after: str, count: int) -> list[str]:
        """Up to `count` registration ids of one index set, in id order, after id `after` ("" first)."""
        start = f"({after}" if after else "-"
        ids = await self._redis.zrangebylex(self._keys.push_targets(edition, urgency), start, "+", 0, count)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def load(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """The records of `ids` in order (None where one is gone), in one round trip."""
        if not ids:
            return []
        raws = await self._redis.mget([self._keys.push_registration(i) for i in ids])
        return [orjson.loads(raw) if raw else None for raw in raws]
