"""Applying desk actions to the tickers: in desk order, exactly once, by any worker.

All workers share one cursor in Redis, the id of the last desk entry applied.
A worker applies entries strictly after that cursor, one at a time, and each
commit is a Lua script that first checks the cursor is still where the worker
read it (compare-and-set), then moves it and performs every write of the entry
together: the line's state, its indexes, the audit record and the ticker event.
So:

- a crash between "written" and "acknowledged" cannot duplicate: the entry is
  already behind the cursor and is skipped when it is claimed again;
- entries are applied in desk order even with several workers, because a worker
  that reads a later entry first applies every earlier one still pending,
  including those a dead worker had claimed;
- two workers racing for the same entry: one commit wins, the other re-reads.

The short path (issue 14). A worker that knows the cursor (it moved it last) commits an entry
it has just read from the consumer group in one round trip: no GET of the cursor, no XRANGE of
the desk, no GET of the line, no separate XACK. The script checks what those reads used to
establish: that the cursor is still where the worker left it, that the entry is the very next
one on the desk after it (so an entry another worker read and has not applied yet is never
overtaken), and that the line's stored state is the one the plan was made from (none for a new
post; for a follow-up, the state this worker last wrote, or read). If the cursor moved the
worker falls back to reading the cursor and the desk (`apply_through`); if the line changed it
plans again from a fresh read. The entry is acknowledged in the same script, after its ticker
event is written, with `pcall` so that an applier running without the group (a catch-up in a
test) still commits.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic
from redis.asyncio import Redis

from flashwire.core.clock import iso_from_ms, ms_from_iso, now_ms
from flashwire.core.cursors import cursor_key
from flashwire.core.epoch import new_epoch
from flashwire.core.keys import Keys
from flashwire.core.models import (
    DESK_ACTION_ADAPTER,
    LINE_ADAPTER,
    URGENCY_IPTC,
    CancelAction,
    CorrectAction,
    DeskAction,
    ExpireAction,
    ExpiryAction,
    Line,
    PinAction,
    PostAction,
    ReleaseAction,
    RetractAction,
)
from flashwire.core.settings import Settings

log = logging.getLogger(__name__)

HISTORY_MAX_VERSIONS = 100
LINE_KEEP_S = 30 * 24 * 3600
# Retracted lines stay listed this long, for the feeds' deleted-entry tombstones.
KILLED_KEEP_MS = 24 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000

# The ticker epoch is created (if missing) in the same script as the ticker write, so an entry of
# a new generation is never visible before its epoch (flashwire/core/epoch.py).
#
# Every key the script touches is in KEYS (a Redis Cluster routes and checks a script by its
# declared keys; PITFALLS 3.9): KEYS[1..6] are fixed (the cursor, the ticker, the epoch, the
# ticker's origin, the desk, the line), and each op in ARGV[3] names its key by its index in KEYS
# (`["SET", "7", ...]`), never by name.
#
# ARGV: 1 the cursor expected, 2 the entry, 3 the ops, 4 the event type ('' for none), 5 the event,
# 6 the ticker's MAXLEN, 7 a new epoch, 8 the consumer group, 9 the line's stored JSON the plan
# was made from ('' for none). Returns {'ok', <ticker entry id or ''>}, {'moved'} (the cursor is
# elsewhere, or the entry is not the next one after it) or {'changed'} (the line is not as planned).
_COMMIT = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return {'moved'} end
local after = '-'
if ARGV[1] ~= '' then after = '(' .. ARGV[1] end
local next_entry = redis.call('XRANGE', KEYS[5], after, '+', 'COUNT', 1)[1]
if next_entry == nil or next_entry[1] ~= ARGV[2] then return {'moved'} end
if (redis.call('GET', KEYS[6]) or '') ~= ARGV[9] then return {'changed'} end
redis.call('SET', KEYS[1], ARGV[2])
for _, op in ipairs(cjson.decode(ARGV[3])) do
  op[2] = KEYS[tonumber(op[2])]
  redis.call(unpack(op))
end
local id = ''
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[7], 'NX')
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 't', ARGV[4], 'd', ARGV[5])
  redis.call('SET', KEYS[4], id, 'NX')
end
redis.pcall('XACK', KEYS[5], ARGV[8], ARGV[2])
return {'ok', id}
"""

# Lines whose stored JSON a worker remembers (those it wrote or read last), so that a follow-up
# on a recent line is planned without reading it first; the commit checks it is still current.
LINE_MEMORY = 1024

# Called after a commit that scheduled a line: (line id, edition, release time in ms).
ScheduleHook = Callable[[str, str, int], Awaitable[None]]


@dataclass
class Plan:
    """Everything one desk entry changes; an empty `event_type` means nothing for readers.

    `event` is the ticker event's body as JSON-ready data: {"line": <Line>} for `line`, plus
    "change" (and "previous" for corrections) for `update`, "id", "reason", "note" for `retract`
    (docs/protocol.md section 4); the hub adds type, edition and cursor.
    """

    line_id: str
    edition: str
    entry_id: str = "0-0"
    ops: list[list[str]] = field(default_factory=list)
    event_type: str = ""
    event: dict[str, Any] | None = None
    scheduled_at_ms: int | None = None
    # The line's JSON as this entry stores it (None if it does not write the line).
    line_doc: str | None = None


def declared_keys(fixed: list[str], ops: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The commit script's KEYS (`fixed`, then each op's key once, in order of appearance) and
    its ops with the key (every op's second element) replaced by its 1-based index in KEYS."""
    keys = list(fixed)
    index = {key: i for i, key in enumerate(keys, start=1)}
    indexed = []
    for command, key, *rest in ops:
        if key not in index:
            keys.append(key)
            index[key] = len(keys)
        indexed.append([command, str(index[key]), *rest])
    return keys, indexed


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sortable form of a stream id such as '1732550400000-3' (the one cursor rule)."""
    return cursor_key(entry_id)


def _revision(fields: dict[bytes, bytes]) -> int | None:
    """The revision a desk entry produces (field `r`, service/desk.py); None for the schedule's
    releases and expiries, and for entries written before revisions were counted."""
    raw = fields.get(b"r")
    return int(raw) if raw is not None and raw.isdigit() else None


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _action(entry_id: str, fields: dict[bytes, bytes]) -> DeskAction | None:
    """The desk entry's action (field `a`), or None (logged) if it is malformed: skipped."""
    try:
        return DESK_ACTION_ADAPTER.validate_json(fields[b"a"])
    except (KeyError, pydantic.ValidationError):
        log.error("skipping malformed desk entry %s: %r", entry_id, fields)
        return None


def _derive(current: Line, **changes: Any) -> Line:
    """A new version of `current`, validated as a whole: a change that would make the stored
    line break the contract fails here, in the worker, and never reaches a reader."""
    return LINE_ADAPTER.validate_python({**current.model_dump(), **changes})


def _json(line: Line) -> dict[str, Any]:
    return line.model_dump(mode="json")


class Applier:
    """Applies desk entries up to a target id, in order, exactly once."""

    def __init__(
        self, redis: Redis, keys: Keys, settings: Settings, *, on_schedule: ScheduleHook | None = None
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._commit = redis.register_script(_COMMIT)
        self._on_schedule = on_schedule
        # The cursor as this worker left it (None: unknown, read it first).
        self._cursor: str | None = None
        self._lines: OrderedDict[str, str] = OrderedDict()

    async def applied_cursor(self) -> str:
        """The id of the last desk entry applied, or '' if none yet (and this applier knows it)."""
        raw = await self._redis.get(self._keys.desk_applied)
        self._cursor = "" if raw is None else _decode(raw)
        return self._cursor

    async def apply_read(self, entries: list[tuple[str, dict[bytes, bytes]]]) -> tuple[int, bool]:
        """Apply `entries` (id, fields), just read from the consumer group in desk order: each in
        one round trip while this worker knows the cursor and each is the next entry on the desk
        (the short path above), else everything through the last of them as `apply_through` does.
        Returns how many this call applied, and whether every entry was acknowledged by its commit
        (if not, the caller acknowledges them: some were applied elsewhere, or skipped)."""
        done = 0
        acknowledged = True
        for entry_id, fields in entries:
            if self._cursor is None:
                break
            if self._cursor and stream_id_key(entry_id) <= stream_id_key(self._cursor):
                acknowledged = False  # applied already (a catch-up at start-up read it first)
                continue
            status = await self._commit_entry(self._cursor, entry_id, fields)
            if status != "ok":
                self._cursor = None
                break
            done += 1
        else:
            return done, acknowledged
        return done + await self.apply_through(entries[-1][0]), False

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
                if await self._commit_entry(last, entry_id, fields) != "ok":
                    self._cursor = None
                    break  # another worker moved the cursor: re-read it
                last = entry_id
                done += 1

    async def _commit_entry(self, expected: str, entry_id: str, fields: dict[bytes, bytes]) -> str:
        """Plan and commit one entry with the cursor at `expected`: "ok" (the cursor is now at
        `entry_id`) or "moved". A plan made from a remembered line that is no longer current is
        made again from the line as stored."""
        action = _action(entry_id, fields)
        fresh = False
        while True:
            stored = await self._stored_line(action, fresh=fresh)
            plan = self._plan(entry_id, fields, action, stored)
            status = await self._apply(expected, entry_id, plan, stored)
            if status != "changed":
                break
            fresh = True
        if status != "ok":
            return status
        self._cursor = entry_id
        if plan.line_doc is not None:
            self._remember(plan.line_id, plan.line_doc)
        if plan.scheduled_at_ms is not None and self._on_schedule is not None:
            await self._on_schedule(plan.line_id, plan.edition, plan.scheduled_at_ms)
        return "ok"

    async def _apply(self, expected: str, entry_id: str, plan: Plan, stored: str) -> str:
        keys, ops = declared_keys(
            [
                self._keys.desk_applied,
                self._keys.ticker(plan.edition),
                self._keys.epoch,
                self._keys.ticker_origin(plan.edition),
                self._keys.desk,
                self._keys.line(plan.line_id),
            ],
            plan.ops,
        )
        result = await self._commit(
            keys=keys,
            args=[
                expected,
                entry_id,
                orjson.dumps(ops),
                plan.event_type,
                orjson.dumps(plan.event) if plan.event is not None else b"",
                self._settings.ticker_retention,
                new_epoch(),
                self._keys.desk_group,
                stored,
            ],
        )
        return _decode(result[0])

    async def _stored_line(self, action: DeskAction | None, *, fresh: bool) -> str:
        """The line's stored JSON ('' for none) that the plan starts from: none for a new post (its
        id is new: service/desk.py), the remembered one for a line this worker touched lately, else
        read; always read when `fresh`. The commit checks it (the short path above)."""
        if action is None:
            return ""
        if not fresh:
            if isinstance(action, PostAction):
                return ""
            if action.id in self._lines:
                self._lines.move_to_end(action.id)
                return self._lines[action.id]
        raw = await self._redis.get(self._keys.line(action.id))
        doc = "" if raw is None else _decode(raw)
        if doc:
            self._remember(action.id, doc)
        return doc

    def _remember(self, line_id: str, doc: str) -> None:
        self._lines[line_id] = doc
        self._lines.move_to_end(line_id)
        while len(self._lines) > LINE_MEMORY:
            self._lines.popitem(last=False)

    # -- planning --------------------------------------------------------------

    def _plan(
        self, entry_id: str, fields: dict[bytes, bytes], action: DeskAction | None, stored: str
    ) -> Plan:
        """What entry `entry_id` (`action`, None if malformed) changes, from the line's `stored` JSON."""
        if action is None:
            return Plan(line_id="-", edition="-")
        plan = Plan(line_id=action.id, edition=action.edition, entry_id=entry_id)
        current = LINE_ADAPTER.validate_json(stored) if stored else None
        revision = _revision(fields)
        # The line's revision is counted when the desk accepts an action (service/desk.py): the line
        # takes the number its entry carries, so an If-Match made against it matches the counter.
        base = current
        if current is not None and revision is not None:
            base = current.model_copy(update={"revision": revision})
        after = self._planned(plan, action, base)
        if after is not None:
            self._store(plan, after)
            self._audit(plan, entry_id, action, current, after)
        elif base is not None and current is not None and base.revision != current.revision:
            # An accepted action that changes nothing (a second pin, say) still moves the revision
            # on, quietly: no history entry, no audit record, no event.
            plan.line_doc = base.model_dump_json()
            plan.ops.append(["SET", self._keys.line(plan.line_id), plan.line_doc, "KEEPTTL"])
        return plan

    def _planned(self, plan: Plan, action: DeskAction, current: Line | None) -> Line | None:
        """The line after `action`, or None if the action changes nothing (see each handler)."""
        if isinstance(action, PostAction):
            return self._plan_post(plan, action, current)
        if current is None:
            return None
        if isinstance(action, ReleaseAction):
            return self._plan_release(plan, action, current)
        if isinstance(action, CancelAction):
            return self._plan_cancel(plan, action, current)
        if isinstance(action, CorrectAction):
            return self._plan_correct(plan, action, current)
        if isinstance(action, ExpiryAction):
            return self._plan_expiry(plan, action, current)
        if isinstance(action, PinAction):
            return self._pinning(plan, action, current, pinned=action.action == "pin")
        if isinstance(action, RetractAction):
            return self._plan_retract(plan, action, current)
        return self._plan_expire(plan, action, current)

    def _store(self, plan: Plan, line: Line) -> None:
        doc = plan.line_doc = line.model_dump_json()
        keep = str(LINE_KEEP_S)
        history = self._keys.history(plan.line_id)
        plan.ops += [
            ["SET", self._keys.line(plan.line_id), doc, "EX", keep],
            ["RPUSH", history, doc],
            ["LTRIM", history, str(-HISTORY_MAX_VERSIONS), "-1"],
            ["EXPIRE", history, keep],
        ]

    def _audit(self, plan: Plan, entry_id: str, action: DeskAction, before: Line | None, after: Line) -> None:
        """The audit record (flashwire.core.models.AuditEntry without its id, which is the stream id)."""
        record: dict[str, Any] = {
            "at": iso_from_ms(action.at),
            "actor": action.by.model_dump(),
            "action": action.action,
            "edition": plan.edition,
            "line_id": plan.line_id,
            "desk_id": entry_id,
            "before": None if before is None else _json(before),
            "after": _json(after),
        }
        if isinstance(action, RetractAction) and action.reason:
            record["reason"] = action.reason
        plan.ops.append(
            ["XADD", self._keys.audit, *self._audit_trim(), "*", "e", orjson.dumps(record).decode()]
        )

    def _audit_trim(self) -> list[str]:
        """XADD's trimming arguments for the audit stream: entries older than
        FLASHWIRE_AUDIT_RETENTION_DAYS go as each new one is appended (`MINID ~ <ms>-0`; the `~`
        lets Redis drop only whole stream nodes, of up to 100 entries, so a few entries may
        outlive the limit until their node is all old). Audit ids are stream ids, so the age is
        the id's time. Nothing with a retention of 0 (keep forever)."""
        days = self._settings.audit_retention_days
        if days == 0:
            return []
        return ["MINID", "~", f"{max(0, now_ms() - days * DAY_MS)}-0"]

    def _live(self, plan: Plan, line: Line, *, add: bool) -> None:
        live, expiry = self._keys.live(plan.edition), self._keys.expiry
        if add:
            # Ordered by the desk entry that put it live: ms x 1000 + sequence stays exact in a double.
            ms, seq = stream_id_key(plan.entry_id)
            plan.ops.append(["ZADD", live, str(ms * 1000 + min(seq, 999)), plan.line_id])
            plan.ops.append(["ZADD", expiry, str(ms_from_iso(line.expires_at)), plan.line_id])
        else:
            plan.ops.append(["ZREM", live, plan.line_id])
            plan.ops.append(["ZREM", expiry, plan.line_id])

    def _event(self, plan: Plan, event_type: str, event: dict[str, Any]) -> None:
        plan.event_type, plan.event = event_type, event

    @staticmethod
    def _is_live(line: Line | None) -> bool:
        return line is not None and line.status == "usable" and not line.expired

    def _plan_post(self, plan: Plan, action: PostAction, current: Line | None) -> Line | None:
        if current is not None:
            return None
        body, at = action.line, action.at
        embargo_ms = body.embargo_until_ms
        line = LINE_ADAPTER.validate_python(
            {
                "id": plan.line_id,
                "version": 1,
                "edition": plan.edition,
                "language": plan.edition,
                "direction": self._settings.direction(plan.edition),
                "text": body.text,
                "urgency": body.urgency,
                "iptc_urgency": URGENCY_IPTC[body.urgency],
                "topics": body.topics,
                "url": body.url,
                "source": body.source,
                "status": "withheld" if embargo_ms else "usable",
                "pinned": False,
                "published_at": iso_from_ms(embargo_ms or at),
                "updated_at": iso_from_ms(at),
                "expires_at": iso_from_ms(body.expires_at_ms),
                "embargoed": iso_from_ms(embargo_ms) if embargo_ms else None,
                "author": action.by.name,
            }
        )
        if embargo_ms:
            plan.ops.append(["ZADD", self._keys.scheduled(plan.edition), str(embargo_ms), plan.line_id])
            plan.scheduled_at_ms = embargo_ms
            return line
        self._live(plan, line, add=True)
        self._event(plan, "line", {"line": _json(line)})
        return line

    def _plan_release(self, plan: Plan, action: ReleaseAction, current: Line) -> Line | None:
        if current.status != "withheld":
            return None  # cancelled, or released already
        if current.embargoed != iso_from_ms(action.expected_embargo_ms):
            return None
        at = iso_from_ms(action.at)
        line = _derive(current, status="usable", embargoed=None, updated_at=at, published_at=at)
        plan.ops.append(["ZREM", self._keys.scheduled(plan.edition), plan.line_id])
        self._live(plan, line, add=True)
        self._event(plan, "line", {"line": _json(line)})
        return line

    def _plan_cancel(self, plan: Plan, action: CancelAction, current: Line) -> Line | None:
        if current.status != "withheld":
            return None
        line = _derive(current, status="canceled", updated_at=iso_from_ms(action.at))
        plan.ops.append(["ZREM", self._keys.scheduled(plan.edition), plan.line_id])
        return line

    def _plan_correct(self, plan: Plan, action: CorrectAction, current: Line) -> Line | None:
        if current.status == "canceled" or current.expired:
            return None
        changes = action.changes.model_dump()
        expires_ms = changes.pop("expires_at_ms", None)
        if expires_ms is not None:
            changes["expires_at"] = iso_from_ms(expires_ms)
        urgency = changes.get("urgency", current.urgency)
        line = _derive(
            current,
            **changes,
            iptc_urgency=URGENCY_IPTC[urgency],
            version=current.version + 1,
            updated_at=iso_from_ms(action.at),
            author=action.by.name,
        )
        if current.status == "withheld":
            return line  # a scheduled line: corrected quietly, readers see it at release
        if expires_ms is not None:
            plan.ops.append(["ZADD", self._keys.expiry, str(expires_ms), plan.line_id])
        # Readers filtering by topic or urgency need the old values to notice a line leaving their filter.
        previous = {"topics": current.topics, "urgency": current.urgency}
        self._event(plan, "update", {"change": "correction", "line": _json(line), "previous": previous})
        return line

    def _plan_expiry(self, plan: Plan, action: ExpiryAction, current: Line) -> Line | None:
        if not self._is_live(current) and current.status != "withheld":
            return None
        expires_ms = action.expires_at_ms
        line = _derive(current, expires_at=iso_from_ms(expires_ms), updated_at=iso_from_ms(action.at))
        if current.status == "usable":
            plan.ops.append(["ZADD", self._keys.expiry, str(expires_ms), plan.line_id])
            self._event(plan, "update", {"change": "expiry", "line": _json(line)})
        return line

    def _pinning(self, plan: Plan, action: PinAction, current: Line, *, pinned: bool) -> Line | None:
        if not self._is_live(current) or current.pinned == pinned:
            return None
        line = _derive(current, pinned=pinned, updated_at=iso_from_ms(action.at))
        self._event(plan, "update", {"change": "pin" if pinned else "unpin", "line": _json(line)})
        return line

    def _plan_retract(self, plan: Plan, action: RetractAction, current: Line) -> Line | None:
        if not self._is_live(current):
            return None
        line = _derive(
            current,
            status="canceled",
            pinned=False,
            version=current.version + 1,
            updated_at=iso_from_ms(action.at),
            author=action.by.name,
        )
        self._live(plan, line, add=False)
        killed, at = self._keys.killed(plan.edition), action.at
        plan.ops.append(["ZADD", killed, str(at), plan.line_id])
        plan.ops.append(["ZREMRANGEBYSCORE", killed, "-inf", str(at - KILLED_KEEP_MS)])
        self._event(
            plan,
            "retract",
            {"id": plan.line_id, "reason": "killed", "note": action.reason, "line": _json(line)},
        )
        return line

    def _plan_expire(self, plan: Plan, action: ExpireAction, current: Line) -> Line | None:
        if not self._is_live(current):
            return None
        if ms_from_iso(current.expires_at) != action.expected_expires_at_ms:
            return None  # the expiry was moved after this was enqueued
        line = _derive(current, expired=True, pinned=False)
        self._live(plan, line, add=False)
        self._event(
            plan, "retract", {"id": plan.line_id, "reason": "expired", "note": "", "line": _json(line)}
        )
        return line
