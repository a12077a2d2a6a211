"""Submitting editorial actions to the desk stream, atomically and idempotently.

One Lua script does the whole acceptance: replay a stored Idempotency-Key
result, check that a follow-up action names a known line, check its If-Match
against the line's revision, append the action to the desk stream and remember
the result. Either all of it happens or none, so a retried POST can never
produce a second line, two changes made against the same revision cannot both
be accepted, and a rejected request writes nothing.

Revisions. Each line's revision is counted here, at acceptance, in the hash
`Keys.revisions`: a post sets it to 1 and every accepted follow-up (correction,
pin, unpin, expiry change, retraction, cancellation) adds 1, and the desk entry
carries the revision it produces (field `r`). The worker stores that number in
the line it applies (workers/apply.py), even when the action turns out to
change nothing, so the applied line's `revision` catches up with this counter
as soon as the desk is applied. The schedule's releases and expiries
(workers/schedule.py) are not counted: a release publishes the line as it
stands, and an expired line takes no more changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from flashwire.core.keys import Keys
from flashwire.core.models import ACCEPTED_ADAPTER, AcceptedResponse, DeskAction

_SUBMIT = """
local desk, idem, index, revisions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local action, fingerprint, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local line_id, edition, mode, maxlen, response = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local if_match, tags = ARGV[9], ARGV[10]
if fingerprint ~= '' then
  local previous = redis.call('GET', idem)
  if previous then return {'replay', previous} end
end
local revision = 1
if mode == 'post' then
  if redis.call('HSETNX', index, line_id, edition) == 0 then return {'exists', ''} end
elseif redis.call('HGET', index, line_id) ~= edition then
  return {'missing', ''}
else
  -- A line from before revisions were counted is at revision 1.
  local current = tonumber(redis.call('HGET', revisions, line_id) or '1')
  if if_match == 'tags' and not string.find(tags, ' ' .. current .. ' ', 1, true) then
    return {'stale', tostring(current)}
  end
  revision = current + 1
end
redis.call('HSET', revisions, line_id, revision)
local id = redis.call('XADD', desk, 'MAXLEN', '~', maxlen, '*', 'a', action, 'r', revision)
if fingerprint ~= '' then
  redis.call('SET', idem, fingerprint .. '\\n' .. id .. '\\n' .. response, 'EX', ttl)
end
return {'ok', id}
"""


class UnknownLine(LookupError):
    """A follow-up action names a line that was never posted in that edition."""


class StaleRevision(ValueError):
    """The action's If-Match does not match the line's revision; `revision` is the current one."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"the line is at revision {revision}")
        self.revision = revision


class IdempotencyConflict(ValueError):
    """An Idempotency-Key was reused with a different request."""


@dataclass(frozen=True)
class Accepted:
    """The result of an accepted action: the response body (with its `desk_id`), and whether it is
    the stored answer to an earlier attempt."""

    body: AcceptedResponse
    replayed: bool


def _stored(raw: str, fingerprint: str) -> Accepted:
    """The stored first answer, `<fingerprint>\\n<desk id>\\n<response JSON>`, for a retry."""
    stored_fingerprint, desk_id, stored = raw.split("\n", 2)
    if stored_fingerprint != fingerprint:
        raise IdempotencyConflict("Idempotency-Key was used for a different request")
    body = ACCEPTED_ADAPTER.validate_json(stored).model_copy(update={"desk_id": desk_id})
    return Accepted(body=body, replayed=True)


class Desk:
    """Appends validated actions to the desk stream."""

    def __init__(self, redis: Redis, keys: Keys, *, maxlen: int, idempotency_ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._idempotency_ttl_s = idempotency_ttl_s
        self._script = redis.register_script(_SUBMIT)

    async def line_edition(self, line_id: str) -> str | None:
        """The edition a line was posted in, or None if there is no such line."""
        raw = await self._redis.hget(self._keys.line_index, line_id)
        return None if raw is None else raw.decode()

    async def revision(self, line_id: str) -> int:
        """The revision the line's last accepted change produces (1 for a line never changed)."""
        raw = await self._redis.hget(self._keys.revisions, line_id)
        return 1 if raw is None else int(raw)

    async def replayed(self, idempotency: tuple[str, str, str] | None) -> Accepted | None:
        """The stored first result of a retried request, if there is one (checked before any
        state check, so a retry gets what the first attempt got)."""
        if idempotency is None:
            return None
        token_id, key, fingerprint = idempotency
        raw = await self._redis.get(self._keys.idempotency(token_id, key))
        if raw is None:
            return None
        return _stored(raw.decode(), fingerprint)

    async def submit(
        self,
        action: DeskAction,
        response: AcceptedResponse,
        *,
        idempotency: tuple[str, str, str] | None = None,
        if_match: frozenset[int] | Literal["*"] | None = None,
    ) -> Accepted:
        """Append `action`; `response` is what the client gets, plus `desk_id`.

        `idempotency` is (token id, key, request fingerprint). With it, the
        first result is stored and returned again for a retry of the same
        request; a different request under the same key is a conflict.

        `if_match` is the follow-up's precondition: the revisions it may be
        applied to, "*" (any: the line exists) or None (no precondition). It is
        checked in the same script that appends the action, after a replay, so
        of two changes made against one revision only the first is accepted;
        the other raises StaleRevision with the revision now current.
        """
        token_id, key, fingerprint = idempotency or ("", "", "")
        idem_key = self._keys.idempotency(token_id, key) if key else self._keys.desk + ":noidem"
        mode = "post" if action.action == "post" else "follow-up"
        status, payload = await self._script(
            keys=[self._keys.desk, idem_key, self._keys.line_index, self._keys.revisions],
            args=[
                action.model_dump_json(),
                fingerprint,
                self._idempotency_ttl_s,
                action.id,
                action.edition,
                mode,
                self._maxlen,
                response.model_dump_json(exclude={"desk_id"}),
                "" if if_match is None or if_match == "*" else "tags",
                "".join(f" {tag} " for tag in sorted(if_match)) if isinstance(if_match, frozenset) else "",
            ],
        )
        status = status.decode()
        if status == "replay":
            return _stored(payload.decode(), fingerprint)
        if status == "stale":
            raise StaleRevision(int(payload))
        if status in {"missing", "exists"}:
            raise UnknownLine(action.id)
        return Accepted(body=response.model_copy(update={"desk_id": payload.decode()}), replayed=False)
