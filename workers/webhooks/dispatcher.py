"""The webhook dispatcher: ticker events into each matching endpoint's own ordered log.

It reads every edition's ticker (`{fw}:ticker:{edition}`) through the consumer group `webhooks`
(beside the readers' plain XREAD and push's group `push`), blocking on XREADGROUP, as the desk
consumer reads the desk (workers/fanout.py). The group only says what is new and who holds what;
the order comes from a cursor all workers share per edition, `Keys.webhook_dispatched`, as the
appliers share `{fw}:desk:applied` (workers/apply.py): whatever entry a worker is handed, it
records every entry of that edition from the shared cursor up to it, in ticker order, and moves
the cursor in the same script that appends the messages (compare-and-set: a worker that lost the
race reads the cursor again). So each event is recorded exactly once per endpoint and in ticker
order, with any number of workers, and an entry is acknowledged only after it is recorded: a
worker killed in between leaves it pending, and it is claimed (XAUTOCLAIM) after
`FLASHWIRE_CLAIM_IDLE_MS` and found already recorded.

An event is recorded for each active endpoint whose editions, topics and minimum urgency match
it (flashwire/core/webhook_models.py), and that was registered before the event; a correction
that takes a line out of an endpoint's filter is recorded as `line.withdrawn` for it (what a
reader gets as a `retract` "filtered"). Disabled endpoints are not recorded for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.clock import now_ms
from flashwire.core.cursors import cursor_key
from flashwire.core.keys import Keys
from flashwire.core.settings import Settings
from flashwire.core.webhook_models import EndpointRecord, Message, message_of, withdrawn
from flashwire.core.webhook_store import APPEND_LUA, EndpointStore
from flashwire.workers.consumer_loop import run_consumer
from flashwire.workers.metrics import WorkerMetrics
from flashwire.workers.outage import OutageLog
from flashwire.workers.webhooks.metrics import WebhookMetrics

log = logging.getLogger(__name__)

PART = "webhook dispatcher"
READ_COUNT = 200
READ_BLOCK_MS = 1_000

# KEYS: the cursor, the endpoints hash, then (log, state) per message; ARGV: the expected cursor,
# the new one, the log's MAXLEN, now (ms), then (endpoint id, webhook-id, type, body) per message.
# Returns the ids of the endpoints this started (they were idle), or false if the cursor moved.
_COMMIT = (
    APPEND_LUA
    + """
if (redis.call('GET', KEYS[1]) or '0-0') ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[2])
local started = {}
for i = 1, (#KEYS - 2) / 2 do
  local log, state, a = KEYS[2 * i + 1], KEYS[2 * i + 2], 4 + (i - 1) * 4
  local endpoint = ARGV[a + 1]
  if redis.call('HEXISTS', KEYS[2], endpoint) == 1 then
    local before = redis.call('HGET', state, 'current')
    append(log, state, ARGV[3], ARGV[4], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], '0')
    if not before or before == '' then started[#started + 1] = endpoint end
  end
end
return started
"""
)

Kick = Callable[[str], Awaitable[None]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def matches(
    endpoints: list[EndpointRecord], edition: str, cursor: str, message: Message
) -> list[tuple[str, Message]]:
    """(endpoint id, message as that endpoint gets it) for every endpoint the event is for."""
    ms = int(cursor.split("-", 1)[0])
    found: list[tuple[str, Message]] = []
    for endpoint in endpoints:
        if endpoint.status != "active" or ms < endpoint.created_at_ms:
            continue
        if endpoint.wants(edition, message.topics, message.rank):
            found.append((endpoint.id, message))
        elif message.previous is not None and endpoint.wants(edition, *message.previous):
            found.append((endpoint.id, withdrawn(message)))
    return found


class Dispatcher:
    """One consumer of the tickers' `webhooks` group; several may run at once."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        store: EndpointStore,
        *,
        name: str,
        kick: Kick,
        outages: OutageLog,
        metrics: WebhookMetrics,
        worker_metrics: WorkerMetrics,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._store = store
        self.name = name
        self._kick = kick
        self._outages = outages
        self._metrics = metrics
        self._worker_metrics = worker_metrics
        self._commit = redis.register_script(_COMMIT)
        self._streams = {keys.ticker(edition): edition for edition in settings.editions}

    async def ensure_groups(self) -> None:
        """Create the group on every ticker from its start, where it is missing (the shared cursor,
        not the group, says what was recorded; events older than an endpoint are skipped)."""
        for stream in self._streams:
            try:
                await self._redis.xgroup_create(stream, self._keys.webhook_group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def dispatch_through(self, edition: str, target: str) -> int:
        """Record every event of `edition` up to and including `target` not recorded yet; returns
        how many messages this call recorded."""
        recorded = 0
        target_key = cursor_key(target)
        while True:
            raw = await self._redis.get(self._keys.webhook_dispatched(edition))
            cursor = _text(raw) if raw else "0-0"
            if cursor_key(cursor) >= target_key:
                return recorded
            entries = await self._redis.xrange(
                self._keys.ticker(edition), f"({cursor}", target, count=READ_COUNT
            )
            newest = _text(entries[-1][0]) if entries else target
            endpoints = await self._store.all()
            appends: list[tuple[str, Message]] = []
            for entry_id, fields in entries:
                entry_cursor = _text(entry_id)
                try:
                    message = message_of(
                        edition, entry_cursor, _text(fields[b"t"]), orjson.loads(fields[b"d"])
                    )
                except (KeyError, ValueError):
                    log.error(
                        "webhook dispatcher: unreadable ticker entry %s of %s; skipped", entry_cursor, edition
                    )
                    continue
                if message is not None:
                    appends.extend(matches(endpoints, edition, entry_cursor, message))
            keys = [self._keys.webhook_dispatched(edition), self._keys.webhook_endpoints]
            args: list[str | int | bytes] = [cursor, newest, self._settings.webhook_log_retention, now_ms()]
            for endpoint_id, message in appends:
                keys += [self._keys.webhook_log(endpoint_id), self._keys.webhook_state(endpoint_id)]
                args += [endpoint_id, message.id, message.type, message.body]
            started = await self._commit(keys=keys, args=args)
            if started is None:
                continue  # another worker moved the cursor first: read it again
            recorded += len(appends)
            self._metrics.messages.inc(len(appends))
            for endpoint_id in started:
                await self._kick(_text(endpoint_id))

    async def _settle(self, pending: dict[str, list[str]]) -> None:
        """Record through the newest entry of each ticker, then acknowledge the entries."""
        for stream, ids in pending.items():
            if not ids:
                continue
            await self.dispatch_through(self._streams[stream], max(ids, key=cursor_key))
            await self._redis.xack(stream, self._keys.webhook_group, *ids)

    async def _read_new(self) -> dict[str, list[str]]:
        response = await self._redis.xreadgroup(
            self._keys.webhook_group,
            self.name,
            dict.fromkeys(self._streams, ">"),
            count=READ_COUNT,
            block=READ_BLOCK_MS,
        )
        return {_text(stream): [_text(i) for i, _ in entries] for stream, entries in response or []}

    async def _claim_abandoned(self) -> dict[str, list[str]]:
        """Take over entries another consumer read but never acknowledged (it died)."""
        claimed: dict[str, list[str]] = {}
        for stream in self._streams:
            result = await self._redis.xautoclaim(
                stream,
                self._keys.webhook_group,
                self.name,
                min_idle_time=self._settings.claim_idle_ms,
                start_id="0-0",
                count=READ_COUNT,
                justid=True,
            )
            claimed[stream] = [_text(entry_id) for entry_id in result]
        return claimed

    async def _claim(self) -> None:
        await self._settle(await self._claim_abandoned())

    async def _step(self) -> None:
        await self._settle(await self._read_new())

    async def run(self) -> None:
        """Dispatch until cancelled, waiting out Redis outages of any length and other errors
        (workers/consumer_loop.py)."""
        await run_consumer(
            PART,
            prepare=self.ensure_groups,
            claim=self._claim,
            step=self._step,
            claim_every_s=self._settings.claim_idle_ms / 2000,
            outages=self._outages,
            metrics=self._worker_metrics,
        )
