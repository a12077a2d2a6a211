"""Partner webhook endpoints and their ordered logs in Redis, as the service and the worker share them.

Layout (docs/operations.md, keys table):

- `Keys.webhook_endpoints`: hash endpoint id -> `EndpointRecord` JSON. Changes are made with a
  compare-and-set script (`EndpointStore.change`), so the worker disabling an endpoint and its
  owner changing a filter never overwrite each other. Scripts, not WATCH/MULTI: redis-py 5's
  Cluster client has no transactions (../shared/PITFALLS.md 0.1), and every key here is `{fw}`.
- `Keys.webhook_log(id)`: the endpoint's own stream of messages, fields `m` (webhook-id), `t`
  (type), `b` (the body, serialised once), `r` ("1" for a replay). Its order is the delivery order.
- `Keys.webhook_state(id)`: hash `current` (the log entry being delivered, "" when idle),
  `attempt` (1, 2, ...), `due_ms` (when that attempt is due), `runner` (the worker running it).
  Appending to an idle endpoint's log starts it in the same script (`APPEND_LUA`): a message is
  never recorded without the endpoint knowing it has something to send. The worker moves it on
  (workers/webhooks/chain.py).
- `Keys.webhook_delivery(id, entry)`: a delivery's status and attempts (`DeliveryRecord`),
  expiring `FLASHWIRE_WEBHOOK_DELIVERY_RETENTION_DAYS` after its last attempt.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.keys import Keys
from flashwire.core.models import Urgency
from flashwire.core.webhook_models import (
    Delivery,
    DeliveryRecord,
    EndpointRecord,
    StoredSecret,
    new_secret,
)

# Lua: append one message to an endpoint's log and start the endpoint if it is idle. Prepended to
# the scripts that record messages (here and workers/webhooks/dispatcher.py).
APPEND_LUA = """
local function append(log, state, maxlen, now, mid, kind, body, replay)
  local id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'm', mid, 't', kind, 'b', body, 'r', replay)
  local current = redis.call('HGET', state, 'current')
  if not current or current == '' then
    redis.call('HSET', state, 'current', id, 'attempt', '1', 'due_ms', now, 'runner', '')
  end
  return id
end
"""

# Lua: record a new endpoint unless its owner has ARGV[4] already (owners counted in the records).
_CREATE = """
local count = 0
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  if cjson.decode(raw)['owner'] == ARGV[1] then count = count + 1 end
end
if count >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""

# Lua: replace an endpoint's record only if it is still the one read (compare-and-set).
_SWAP = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# Lua: forget an endpoint with its log and state, together.
_DELETE = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return removed
"""

_REPLAY = (
    APPEND_LUA
    + """
local log, state = KEYS[1], KEYS[2]
local maxlen, now = ARGV[1], ARGV[2]
local added = {}
for i = 3, #ARGV do
  local found = redis.call('XRANGE', log, ARGV[i], ARGV[i])
  if found[1] then
    local f = {}
    for j = 1, #found[1][2], 2 do f[found[1][2][j]] = found[1][2][j + 1] end
    added[#added + 1] = append(log, state, maxlen, now, f['m'], f['t'], f['b'], '1')
  end
end
return added
"""
)

# Most deliveries one replay request may append.
REPLAY_MAX = 1_000
ENDPOINT_ID_BYTES = 8


class TooManyEndpoints(Exception):
    """The owner already has as many endpoints as FLASHWIRE_WEBHOOK_MAX_ENDPOINTS allows."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EndpointStore:
    """Endpoints, their logs and deliveries, over one Redis client."""

    def __init__(self, redis: Redis, keys: Keys, *, log_retention: int = 10_000) -> None:
        self._redis = redis
        self._keys = keys
        self._log_retention = log_retention
        self._replay = redis.register_script(_REPLAY)
        self._create = redis.register_script(_CREATE)
        self._swap = redis.register_script(_SWAP)
        self._delete = redis.register_script(_DELETE)

    async def create(
        self,
        *,
        owner: str,
        owner_name: str,
        url: str,
        editions: list[str],
        topics: list[str],
        min_urgency: Urgency,
        max_per_owner: int,
    ) -> tuple[str, EndpointRecord]:
        """Record a new endpoint; (its secret, shown once, and the record). TooManyEndpoints if the
        owner has `max_per_owner` already (checked and written in one script)."""
        secret = new_secret()
        now = now_ms()
        record = EndpointRecord(
            id="ep_" + secrets.token_hex(ENDPOINT_ID_BYTES),
            owner=owner,
            owner_name=owner_name,
            url=url,
            editions=editions,
            topics=topics,
            min_urgency=min_urgency,
            secrets=[StoredSecret(secret=secret)],
            created_at_ms=now,
            updated_at_ms=now,
        )
        created = await self._create(
            keys=[self._keys.webhook_endpoints],
            args=[owner, record.id, record.model_dump_json(), max_per_owner],
        )
        if not created:
            raise TooManyEndpoints(f"at most {max_per_owner} endpoints per partner token")
        return secret, record

    async def get(self, endpoint_id: str) -> EndpointRecord | None:
        """The endpoint's record, or None."""
        raw = await self._redis.hget(self._keys.webhook_endpoints, endpoint_id)
        return None if raw is None else _load(raw)

    async def all(self) -> list[EndpointRecord]:
        """Every endpoint, oldest first."""
        raw = await self._redis.hvals(self._keys.webhook_endpoints)
        return sorted((_load(value) for value in raw), key=lambda e: (e.created_at_ms, e.id))

    async def change(
        self, endpoint_id: str, edit: Callable[[EndpointRecord], EndpointRecord | None]
    ) -> EndpointRecord | None:
        """Apply `edit` to the current record and store what it returns, atomically (compare-and-set,
        again if the record changed meanwhile). `edit` returning None changes nothing. Returns the
        stored record, or None if there is no such endpoint."""
        key = self._keys.webhook_endpoints
        while True:
            raw = await self._redis.hget(key, endpoint_id)
            if raw is None:
                return None
            current = _load(raw)
            changed = edit(current)
            if changed is None:
                return current
            if await self._swap(keys=[key], args=[endpoint_id, raw, changed.model_dump_json()]):
                return changed

    async def disable_owned_by(self, owner: str, reason: str, at_ms: int) -> int:
        """Disable every active endpoint registered by token `owner` (it was revoked: nothing more
        goes to its endpoints until an admin enables them); returns how many."""
        disabled = 0

        def disable(current: EndpointRecord) -> EndpointRecord | None:
            if current.status == "disabled":
                return None
            update = {
                "status": "disabled",
                "disabled_reason": reason,
                "disabled_at_ms": at_ms,
                "updated_at_ms": at_ms,
            }
            return current.model_copy(update=update)

        for endpoint in await self.all():
            if endpoint.owner == owner and endpoint.status != "disabled":
                await self.change(endpoint.id, disable)
                disabled += 1
        return disabled

    async def delete(self, endpoint_id: str) -> bool:
        """Forget an endpoint, its log and its state (delivery records expire by themselves)."""
        removed = await self._delete(
            keys=[
                self._keys.webhook_endpoints,
                self._keys.webhook_log(endpoint_id),
                self._keys.webhook_state(endpoint_id),
            ],
            args=[endpoint_id],
        )
        return bool(removed)

    async def state(self, endpoint_id: str) -> dict[str, str]:
        """The endpoint's delivery state (`current`, `attempt`, `due_ms`, `runner`), as strings."""
        raw = await self._redis.hgetall(self._keys.webhook_state(endpoint_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def restart(self, endpoint_id: str) -> None:
        """After re-enabling: the message in flight (if any) starts again from its first attempt, now."""
        state = self._keys.webhook_state(endpoint_id)
        current = await self._redis.hget(state, "current")
        if current:
            await self._redis.hset(state, mapping={"attempt": "1", "due_ms": str(now_ms()), "runner": ""})

    async def deliveries(
        self, endpoint_id: str, *, before: str | None, limit: int
    ) -> tuple[list[Delivery], str | None]:
        """The endpoint's log, newest first, with each delivery's record; and the `before` of the
        next page (None at the end)."""
        upper = f"({before}" if before else "+"
        entries = await self._redis.xrevrange(
            self._keys.webhook_log(endpoint_id), upper, "-", count=limit + 1
        )
        more = len(entries) > limit
        entries = entries[:limit]
        ids = [_text(entry_id) for entry_id, _ in entries]
        records = (
            await self._redis.mget([self._keys.webhook_delivery(endpoint_id, i) for i in ids]) if ids else []
        )
        found: list[Delivery] = []
        for (entry_id, fields), raw in zip(entries, records, strict=True):
            record = DeliveryRecord.model_validate_json(raw) if raw else DeliveryRecord()
            found.append(_delivery(_text(entry_id), fields, record))
        return found, (ids[-1] if more and ids else None)

    async def entries_since(self, endpoint_id: str, since_ms: int) -> list[str]:
        """Ids of the log entries recorded at or after `since_ms` (at most REPLAY_MAX, oldest first)."""
        found = await self._redis.xrange(
            self._keys.webhook_log(endpoint_id), f"{since_ms}-0", "+", count=REPLAY_MAX
        )
        return [_text(entry_id) for entry_id, _ in found]

    async def replay(self, endpoint_id: str, entry_ids: list[str]) -> list[str]:
        """Append copies of these log entries (same webhook-id, type and body, marked replays) to the
        end of the log, in order, starting the endpoint if idle; the new entries' ids."""
        if not entry_ids:
            return []
        added = await self._replay(
            keys=[self._keys.webhook_log(endpoint_id), self._keys.webhook_state(endpoint_id)],
            args=[self._log_retention, now_ms(), *entry_ids[:REPLAY_MAX]],
        )
        return [_text(entry_id) for entry_id in added]


def _delivery(entry_id: str, fields: dict[Any, Any], record: DeliveryRecord) -> Delivery:
    def field(name: str) -> str:
        return _text(fields.get(name.encode(), fields.get(name, b"")))

    ms = int(entry_id.split("-", 1)[0])
    return Delivery.model_validate(
        {
            "id": entry_id,
            "webhook_id": field("m"),
            "type": field("t"),
            "replay": field("r") == "1",
            "recorded_at": iso_from_ms(ms),
            **record.model_dump(),
        }
    )


def _load(raw: bytes | str) -> EndpointRecord:
    return EndpointRecord.model_validate_json(raw)
