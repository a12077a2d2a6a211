"""Applying desk actions to the tickers: in desk order, exactly once, by any worker.

All workers share one cursor in Redis, the id of the last desk entry applied.
A worker applies entries strictly after that cursor, one at a time, and each
commit is a Lua script that first checks the cursor is still where the worker
read it (compare-and-set), then moves it and writes the ticker event and the
line's state together. So:

- a crash between "written" and "acknowledged" cannot duplicate: the entry is
  already behind the cursor and is skipped when it is claimed again;
- entries are applied in desk order even with several workers, because a worker
  that reads a later entry first applies every earlier one still pending,
  including those a dead worker had claimed;
- two workers racing for the same entry: one commit wins, the other re-reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from service.clock import iso_from_ms, ms_from_iso
from service.keys import Keys
from service.lines import URGENCY_IPTC
from service.settings import Settings

log = logging.getLogger(__name__)

HISTORY_MAX_VERSIONS = 100
LINE_KEEP_S = 30 * 24 * 3600

_COMMIT = """
local applied, ticker, line, history, live, expiry = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if (redis.call('GET', applied) or '') ~= ARGV[1] then return false end
redis.call('SET', applied, ARGV[2])
local line_id, keep_s = ARGV[11], ARGV[12]
if ARGV[5] ~= '' then
  redis.call('SET', line, ARGV[5], 'EX', keep_s)
  redis.call('RPUSH', history, ARGV[5])
  redis.call('LTRIM', history, -tonumber(ARGV[13]), -1)
  redis.call('EXPIRE', history, keep_s)
end
if ARGV[6] == 'add' then redis.call('ZADD', live, ARGV[7], line_id)
elseif ARGV[6] == 'rem' then redis.call('ZREM', live, line_id) end
if ARGV[8] == 'add' then redis.call('ZADD', expiry, ARGV[9], line_id)
elseif ARGV[8] == 'rem' then redis.call('ZREM', expiry, line_id) end
if ARGV[3] ~= '' then
  return redis.call('XADD', ticker, 'MAXLEN', '~', ARGV[10], '*', 't', ARGV[3], 'd', ARGV[4])
end
return ''
"""


@dataclass
class Plan:
    """What one desk entry changes; an empty `event_type` means no reader-visible event."""

    line_id: str
    edition: str
    event_type: str = ""
    event: dict[str, Any] | None = None
    line: dict[str, Any] | None = None
    live_op: str = ""
    live_score: int = 0
    expiry_op: str = ""
    expiry_score: int = 0


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sortable form of a stream id such as '1732550400000-3'."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Applier:
    """Applies desk entries up to a target id, in order, exactly once."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._commit = redis.register_script(_COMMIT)

    async def applied_cursor(self) -> str:
        """The id of the last desk entry applied, or '' if none yet."""
        raw = await self._redis.get(self._keys.desk_applied)
        return "" if raw is None else _decode(raw)

    async def apply_through(self, target: str) -> int:
        """Apply every desk entry up to and including `target`; returns how many this call did."""
        done = 0
        target_key = stream_id_key(target)
        while True:
            last = await self.applied_cursor()
            if last and stream_id_key(last) >= target_key:
                return done
            start = f"({last}" if last else "-"
            entries = await self._redis.xrange(self._keys.desk, min=start, max=target, count=200)
            if not entries:
                return done
            for raw_id, fields in entries:
                entry_id = _decode(raw_id)
                plan = await self._plan(fields)
                if not await self._apply(last, entry_id, plan):
                    break  # another worker moved the cursor: re-read it
                last = entry_id
                done += 1

    async def _apply(self, expected: str, entry_id: str, plan: Plan) -> bool:
        keys = self._keys
        result = await self._commit(
            keys=[
                keys.desk_applied,
                keys.ticker(plan.edition),
                keys.line(plan.line_id),
                keys.history(plan.line_id),
                keys.live(plan.edition),
                keys.expiry,
            ],
            args=[
                expected,
                entry_id,
                plan.event_type,
                orjson.dumps(plan.event) if plan.event is not None else b"",
                orjson.dumps(plan.line) if plan.line is not None else b"",
                plan.live_op,
                plan.live_score,
                plan.expiry_op,
                plan.expiry_score,
                self._settings.ticker_retention,
                plan.line_id,
                LINE_KEEP_S,
                HISTORY_MAX_VERSIONS,
            ],
        )
        return result is not None

    async def _current(self, line_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(self._keys.line(line_id))
        return None if raw is None else dict(orjson.loads(raw))

    async def _plan(self, fields: dict[bytes, bytes]) -> Plan:
        try:
            action = orjson.loads(fields[b"a"])
            kind = action["action"]
            plan = Plan(line_id=action["id"], edition=action["edition"])
        except (KeyError, TypeError, orjson.JSONDecodeError):
            log.error("skipping malformed desk entry %r", fields)
            return Plan(line_id="-", edition="-")
        current = await self._current(plan.line_id)
        if kind == "post":
            return self._plan_post(plan, action, current)
        if current is None or current["status"] != "usable" or current.get("expired"):
            return plan  # follow-up on a line that is gone: nothing for readers
        if kind == "correct":
            return self._plan_correct(plan, action, current)
        if kind == "retract":
            return self._plan_retract(plan, action, current)
        if kind == "expire":
            return self._plan_expire(plan, action, current)
        log.error("skipping desk entry with unknown action %r", kind)
        return plan

    def _plan_post(self, plan: Plan, action: dict[str, Any], current: dict[str, Any] | None) -> Plan:
        if current is not None:
            return plan
        body = action["line"]
        at = int(action["at"])
        expires_ms = int(body["expires_at_ms"])
        line = {
            "id": plan.line_id,
            "version": 1,
            "edition": plan.edition,
            "language": plan.edition,
            "direction": self._settings.direction(plan.edition),
            "text": body["text"],
            "urgency": body["urgency"],
            "iptc_urgency": URGENCY_IPTC[body["urgency"]],
            "topics": body["topics"],
            "url": body.get("url"),
            "status": "usable",
            "published_at": iso_from_ms(at),
            "updated_at": iso_from_ms(at),
            "expires_at": iso_from_ms(expires_ms),
            "author": action["by"]["name"],
        }
        plan.event_type, plan.event, plan.line = "line", {"line": line}, line
        plan.live_op, plan.live_score = "add", at
        plan.expiry_op, plan.expiry_score = "add", expires_ms
        return plan

    def _plan_correct(self, plan: Plan, action: dict[str, Any], current: dict[str, Any]) -> Plan:
        line = dict(current)
        changes = dict(action["changes"])
        expires_ms = changes.pop("expires_at_ms", None)
        line.update(changes)
        if expires_ms is not None:
            line["expires_at"] = iso_from_ms(int(expires_ms))
        line["iptc_urgency"] = URGENCY_IPTC[line["urgency"]]
        line["version"] = int(current["version"]) + 1
        line["updated_at"] = iso_from_ms(int(action["at"]))
        line["author"] = action["by"]["name"]
        # Readers filtering by topic or urgency need the old values to notice a line leaving their filter.
        previous = {"topics": current["topics"], "urgency": current["urgency"]}
        plan.event_type, plan.event, plan.line = "update", {"line": line, "previous": previous}, line
        plan.expiry_op, plan.expiry_score = "add", ms_from_iso(line["expires_at"])
        return plan

    def _plan_retract(self, plan: Plan, action: dict[str, Any], current: dict[str, Any]) -> Plan:
        line = dict(current)
        line["status"] = "canceled"
        line["version"] = int(current["version"]) + 1
        line["updated_at"] = iso_from_ms(int(action["at"]))
        line["author"] = action["by"]["name"]
        event = {"id": plan.line_id, "reason": "killed", "note": action.get("reason", ""), "line": line}
        plan.event_type, plan.event, plan.line = "retract", event, line
        plan.live_op, plan.expiry_op = "rem", "rem"
        return plan

    def _plan_expire(self, plan: Plan, action: dict[str, Any], current: dict[str, Any]) -> Plan:
        if ms_from_iso(current["expires_at"]) != int(action["expected_expires_at_ms"]):
            return plan  # a correction moved the expiry after this was enqueued
        line = dict(current)
        line["expired"] = True
        event = {"id": plan.line_id, "reason": "expired", "note": "", "line": line}
        plan.event_type, plan.event, plan.line = "retract", event, line
        plan.live_op, plan.expiry_op = "rem", "rem"
        return plan
