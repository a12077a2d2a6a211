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

Replication (FLASHWIRE_WAIT_REPLICAS). The script and a `WAIT n timeout` go in one
non-transactional pipeline, so they share a connection: WAIT counts the replicas
that have this connection's last write (../shared/PITFALLS.md 3.5; inside MULTI or
a script it would not block). A replayed answer is re-written to the same value
(`SET ... KEEPTTL XX`, a write that propagates) before its WAIT, so the count covers
the stored answer and the action before it. A primary that refuses writes for want
of replicas (`min-replicas-to-write`) fails the script at its first write, with
nothing written: NotEnoughReplicas.

Failover (with Sentinel). The request is run again while the primary moves
(service/write_retry.py), so every script carries an idempotency key: the
client's, or `node_key`, made once per request for one that came without one. A
repeat of a script whose reply was lost returns the stored answer instead of
appending the action twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from flashwire.core.keys import Keys
from flashwire.core.models import ACCEPTED_ADAPTER, AcceptedResponse, DeskAction, Replicas

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


class NotEnoughReplicas(RuntimeError):
    """The primary refused the write (NOREPLICAS: fewer good replicas than `min-replicas-to-write`);
    nothing was recorded."""


# Seconds a key this node made for a request without Idempotency-Key is kept: it only has to
# outlive the node's own retries through a failover (FLASHWIRE_REDIS_FAILOVER_RETRY_S).
NODE_KEY_TTL_S = 300


@dataclass(frozen=True)
class Accepted:
    """The result of an accepted action: the response body (with its `desk_id`), and whether it is
    the stored answer to an earlier attempt."""

    body: AcceptedResponse
    replayed: bool

    @property
    def replicated(self) -> bool:
        """Whether as many replicas as required acknowledged it (always, without WAIT)."""
        replicas = self.body.replicas
        return replicas is None or replicas.acknowledged >= replicas.required


def _stored(raw: str, fingerprint: str, *, replayed: bool = True) -> Accepted:
    """The stored first answer, `<fingerprint>\\n<desk id>\\n<response JSON>`, for a retry."""
    stored_fingerprint, desk_id, stored = raw.split("\n", 2)
    if stored_fingerprint != fingerprint:
        raise IdempotencyConflict("Idempotency-Key was used for a different request")
    body = ACCEPTED_ADAPTER.validate_json(stored).model_copy(update={"desk_id": desk_id})
    return Accepted(body=body, replayed=replayed)


def _refused_for_replicas(exc: ResponseError) -> bool:
    # Inside a script Redis 6.2 reports "... NOREPLICAS Not enough good replicas to write ...".
    return "NOREPLICAS" in str(exc)


class Desk:
    """Appends validated actions to the desk stream."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        maxlen: int,
        idempotency_ttl_s: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        """`wait_replicas` 0: no WAIT."""
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._idempotency_ttl_s = idempotency_ttl_s
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._script = redis.register_script(_SUBMIT)

    async def _wait(self, write: tuple[str | bytes, ...] | None, script: dict[str, Any] | None) -> list[Any]:
        """Run the script (or the write) and WAIT on one connection; [its result, replicas]."""
        pipe = self._redis.pipeline(transaction=False)
        if script is not None:
            await self._script(**script, client=pipe)
        elif write is not None:
            pipe.execute_command(*write)
        pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
        try:
            result: list[Any] = await pipe.execute()
        except ResponseError as exc:
            if _refused_for_replicas(exc):
                raise NotEnoughReplicas(str(exc)) from None
            raise
        return result

    def _replicas(self, acknowledged: int) -> Replicas | None:
        return (
            None
            if not self._wait_replicas
            else Replicas(acknowledged=acknowledged, required=self._wait_replicas)
        )

    async def line_edition(self, line_id: str) -> str | None:
        """The edition a line was posted in, or None if there is no such line."""
        raw = await self._redis.hget(self._keys.line_index, line_id)
        return None if raw is None else raw.decode()

    async def revision(self, line_id: str) -> int:
        """The revision the line's last accepted change produces (1 for a line never changed)."""
        raw = await self._redis.hget(self._keys.revisions, line_id)
        return 1 if raw is None else int(raw)

    async def stored_answer(self, idempotency: tuple[str, str, str] | None) -> bytes | None:
        """The answer stored under the request's Idempotency-Key, raw (None without one): a plain
        read, sent beside the token's lookup (service/api.py), then given to `replay_of`."""
        if idempotency is None:
            return None
        token_id, key, _ = idempotency
        raw: bytes | None = await self._redis.get(self._keys.idempotency(token_id, key))
        return raw

    async def replayed(self, idempotency: tuple[str, str, str] | None) -> Accepted | None:
        """The stored first result of a retried request, if there is one (checked before any
        state check, so a retry gets what the first attempt got)."""
        return await self.replay_of(idempotency, await self.stored_answer(idempotency))

    async def replay_of(self, idempotency: tuple[str, str, str] | None, raw: bytes | None) -> Accepted | None:
        """The first result of a retried request from its stored answer `raw` (`stored_answer`):
        None if there is none; IdempotencyConflict for another request under the same key."""
        if idempotency is None or raw is None:
            return None
        token_id, key, fingerprint = idempotency
        stored = _stored(raw.decode(), fingerprint)
        if not self._wait_replicas:
            return stored
        # Rewritten as it is (a write that propagates), so this connection's WAIT covers it.
        idem_key = self._keys.idempotency(token_id, key)
        _, acknowledged = await self._wait(("SET", idem_key, raw, "KEEPTTL", "XX"), None)
        return Accepted(
            body=stored.body.model_copy(update={"replicas": self._replicas(int(acknowledged))}),
            replayed=True,
        )

    async def submit(
        self,
        action: DeskAction,
        response: AcceptedResponse,
        *,
        idempotency: tuple[str, str, str] | None = None,
        if_match: frozenset[int] | Literal["*"] | None = None,
        node_key: str | None = None,
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

        `node_key` is the key made for a request without `idempotency` that may be run again
        through a failover (service/write_retry.py); its stored answer is kept NODE_KEY_TTL_S.
        """
        made_here = idempotency is None and node_key is not None
        if made_here:
            # The node's own key, so a retry through a failover cannot append twice (see above).
            idempotency = ("node", f"{node_key}", "node")
        token_id, key, fingerprint = idempotency or ("", "", "")
        idem_key = self._keys.idempotency(token_id, key) if key else self._keys.desk + ":noidem"
        mode = "post" if action.action == "post" else "follow-up"
        script: dict[str, Any] = {
            "keys": [self._keys.desk, idem_key, self._keys.line_index, self._keys.revisions],
            "args": [
                action.model_dump_json(),
                fingerprint,
                NODE_KEY_TTL_S if made_here else self._idempotency_ttl_s,
                action.id,
                action.edition,
                mode,
                self._maxlen,
                response.model_dump_json(exclude={"desk_id"}),
                "" if if_match is None or if_match == "*" else "tags",
                "".join(f" {tag} " for tag in sorted(if_match)) if isinstance(if_match, frozenset) else "",
            ],
        }

        if self._wait_replicas:
            (status_raw, payload), acknowledged = await self._wait(None, script)
        else:
            try:
                status_raw, payload = await self._script(**script)
            except ResponseError as exc:
                if _refused_for_replicas(exc):
                    raise NotEnoughReplicas(str(exc)) from None
                raise
            acknowledged = 0
        status = status_raw.decode()
        replicas = {"replicas": self._replicas(int(acknowledged))}
        if status == "replay":
            stored = _stored(payload.decode(), fingerprint, replayed=not made_here)
            return Accepted(body=stored.body.model_copy(update=replicas), replayed=stored.replayed)
        if status == "stale":
            raise StaleRevision(int(payload))
        if status in {"missing", "exists"}:
            raise UnknownLine(action.id)
        body = response.model_copy(update={"desk_id": payload.decode(), **replicas})
        return Accepted(body=body, replayed=False)
