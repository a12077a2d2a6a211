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

from flashwire.core.keys import Keys
from flashwire.core.lines import URGENCY_RANK
from flashwire.core.push_models import SECRET_PREFIX, RegistrationBase, UpdateBase

URGENCIES = ("flash", "urgent", "routine")

# Storing and removing are compare-and-set scripts, not WATCH/MULTI: redis-py 5's Cluster client
# has no transactions (../shared/PITFALLS.md 0.1). The caller reads the registration, computes every
# key (all `{fw:push}`, so one slot), and the script goes ahead only if the registration is still
# what was read ('retry' otherwise).
# KEYS: registration, its client set, the old client set, the old index sets, the new index sets.
# ARGV: the registration read ('' for none), id, now (ms), TTL (s), oldest score still counted,
# the bound, '1' to check the bound, the new document, how many old index sets.
_STORE = """
local raw = redis.call('GET', KEYS[1]) or ''
if raw ~= ARGV[1] then return 'retry' end
if ARGV[7] == '1' and redis.call('ZCOUNT', KEYS[2], ARGV[5], '+inf') >= tonumber(ARGV[6]) then
  return 'limit'
end
local old = tonumber(ARGV[9])
if raw ~= '' then
  for i = 4, 3 + old do redis.call('ZREM', KEYS[i], ARGV[2]) end
  redis.call('ZREM', KEYS[3], ARGV[2])
end
for i = 4 + old, #KEYS do redis.call('ZADD', KEYS[i], 0, ARGV[2]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[8], 'EX', ARGV[4])
return 'ok'
"""

# KEYS: registration, its client set, its index sets. ARGV: the registration read, its id.
_REMOVE = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 'retry' end
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 'ok'
"""
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
        self._store_script = redis.register_script(_STORE)
        self._remove_script = redis.register_script(_REMOVE)

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
        oldest = now - REGISTRATION_TTL_S * 1000
        while True:
            raw = await self._redis.get(key)
            old = orjson.loads(raw) if raw else None
            # A new target, or one taken over from another address, counts against this one.
            check = max_per_client is not None and (old is None or old["client"] != client)
            old_indexes = self._index_keys(old) if old is not None else []
            old_client = self._keys.push_client(old["client"]) if old is not None else client_key
            outcome = await self._store_script(
                keys=[key, client_key, old_client, *old_indexes, *self._index_keys(record)],
                args=[
                    raw or b"",
                    record["id"],
                    now,
                    REGISTRATION_TTL_S,
                    oldest,
                    max_per_client or 0,
                    "1" if check else "0",
                    orjson.dumps(record),
                    len(old_indexes),
                ],
            )
            if outcome == b"limit":
                raise RegistrationLimit
            if outcome == b"ok":
                return Stored(record, created=old is None)

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
        while True:
            raw = await self._redis.get(key)
            if not raw:
                return False
            record = orjson.loads(raw)
            if registered_before_ms is not None and record["registered_at_ms"] > registered_before_ms:
                return False
            outcome = await self._remove_script(
                keys=[key, self._keys.push_client(record["client"]), *self._index_keys(record)],
                args=[raw, reg_id],
            )
            if outcome == b"ok":
                return True

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
