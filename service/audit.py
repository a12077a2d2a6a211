"""The audit trail: every applied editorial action with who, when, the edition, before and after.

The worker appends to the audit stream in the same atomic commit as the change
itself, so the trail cannot miss an action or record one that did not happen.
It is append-only: no endpoint changes or deletes an entry. Readers filter by
edition, editor, action and time range, page backwards, and export CSV or JSON lines.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, TypeAdapter
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.cursors import cursor_key
from flashwire.core.keys import Keys
from flashwire.core.models import Actor, AuditEntry, AuditPage, AuditRecord, Line, TokenRecord, instant_ms
from flashwire.core.settings import Settings
from flashwire.service.errors import ApiError
from flashwire.service.http import authenticate, model_response
from flashwire.service.tokens import ALL_EDITIONS, Token

PAGE_MAX = 500
SCAN_BATCH = 500
CSV_COLUMNS = (
    "audit_id", "at", "actor", "role", "token", "action", "edition", "line_id",
    "reason", "before_text", "after_text", "before", "after",
)  # fmt: skip


@dataclass(frozen=True)
class AuditQuery:
    """Which entries to return."""

    editions: frozenset[str]
    editor: str | None
    action: str | None
    from_ms: int | None
    to_ms: int | None

    def accepts(self, entry: AuditEntry) -> bool:
        """Does an audit record pass the filters?"""
        if entry.edition not in self.editions:
            return False
        if self.editor is not None and entry.actor.name != self.editor:
            return False
        return self.action is None or entry.action == self.action


_ENTRY: TypeAdapter[AuditEntry] = TypeAdapter(AuditEntry)


def token_change(actor: Actor, action: str, before: TokenRecord | None, after: TokenRecord) -> AuditRecord:
    """The record of a token change (`token-create`, `token-revoke`) made now, through the API
    (service/account.py) or from the shell (flashwire/cli.py): edition '*', no line."""
    return AuditRecord(
        at=iso_from_ms(now_ms()),
        actor=actor,
        action=action,
        edition=ALL_EDITIONS,
        line_id="",
        before=before,
        after=after,
    )


async def record(redis: Redis, keys: Keys, entry: AuditRecord) -> str:
    """Append an entry that does not go through the desk (token management); its `audit_id` is
    the stream id returned."""
    entry_id: bytes = await redis.xadd(keys.audit, {"e": entry.model_dump_json()})
    return entry_id.decode()


def _query(request: Request, token: Token) -> AuditQuery:
    settings: Settings = request.app.state.settings
    params = request.query_params
    # Every role may read the trail of its own editions; entries about tokens (edition "*")
    # are visible to tokens that hold every edition.
    if ALL_EDITIONS in token.editions:
        allowed = {*settings.editions, ALL_EDITIONS}
    else:
        allowed = set(token.editions)
    edition = params.get("edition")
    if edition is not None:
        if edition not in allowed:
            raise ApiError(
                403, "forbidden", f"this token has no access to edition {edition!r}", field="edition"
            )
        editions = frozenset({edition})
    else:
        editions = frozenset(allowed)
    times: dict[str, int | None] = {}
    for name in ("from", "to"):
        value = params.get(name)
        try:
            # Stream ids start at 0: a time before 1970 selects from the beginning.
            times[name] = max(0, instant_ms(value)) if value else None
        except ValueError:
            raise ApiError(422, "invalid", "must be an RFC 3339 timestamp", field=name) from None
    return AuditQuery(
        editions=editions,
        editor=params.get("editor") or None,
        action=params.get("action") or None,
        from_ms=times["from"],
        to_ms=times["to"],
    )


async def _entries(
    redis: Redis, keys: Keys, query: AuditQuery, before: str | None
) -> AsyncIterator[AuditEntry]:
    """Matching entries, newest first, starting below `before` (an audit id)."""
    upper = f"({before}" if before else (f"{query.to_ms}" if query.to_ms is not None else "+")
    lower = f"{query.from_ms}" if query.from_ms is not None else "-"
    while True:
        batch = await redis.xrevrange(keys.audit, max=upper, min=lower, count=SCAN_BATCH)
        if not batch:
            return
        for entry_id, fields in batch:
            entry = _ENTRY.validate_python({**orjson.loads(fields[b"e"]), "audit_id": entry_id.decode()})
            if query.accepts(entry):
                yield entry
        upper = f"({batch[-1][0].decode()}"


async def list_audit(request: Request) -> Response:
    """GET /api/v1/audit: newest first; filters edition, editor, action, from, to; paging with `before`."""
    token = await authenticate(request)
    query = _query(request, token)
    limit_text = request.query_params.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= PAGE_MAX:
        raise ApiError(422, "invalid", f"must be an integer from 1 to {PAGE_MAX}", field="limit")
    limit = int(limit_text)
    before = request.query_params.get("before") or None
    if before is not None:
        try:
            cursor_key(before)
        except ValueError:
            raise ApiError(
                422, "invalid", "must be an audit_id from an earlier page", field="before"
            ) from None
    entries: list[AuditEntry] = []
    async for entry in _entries(request.app.state.redis, request.app.state.keys, query, before):
        entries.append(entry)
        if len(entries) == limit:
            break
    next_before = entries[-1].audit_id if len(entries) == limit else None
    return model_response(AuditPage(entries=entries, next_before=next_before))


def _csv_row(entry: AuditEntry) -> list[str]:
    def text(record: object) -> str:
        return record.text if isinstance(record, Line) else ""

    def as_json(record: BaseModel | None) -> str:
        return "null" if record is None else record.model_dump_json()

    return [
        entry.audit_id,
        entry.at,
        entry.actor.name,
        entry.actor.role,
        entry.actor.token,
        entry.action,
        entry.edition,
        entry.line_id,
        entry.reason or "",
        text(entry.before),
        text(entry.after),
        as_json(entry.before),
        as_json(entry.after),
    ]


async def export_audit(request: Request) -> Response:
    """GET /api/v1/audit/export?format=csv|jsonl: every matching entry, oldest first, as a download."""
    token = await authenticate(request)
    query = _query(request, token)
    form = request.query_params.get("format", "jsonl")
    if form not in {"csv", "jsonl"}:
        raise ApiError(422, "invalid", "must be csv or jsonl", field="format")
    entries = [e async for e in _entries(request.app.state.redis, request.app.state.keys, query, None)]
    entries.reverse()

    async def body() -> AsyncIterator[bytes]:
        if form == "jsonl":
            for entry in entries:
                yield entry.model_dump_json().encode() + b"\n"
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for entry in entries:
            writer.writerow(_csv_row(entry))
        yield buffer.getvalue().encode()

    stamp = iso_from_ms(now_ms()).replace(":", "")
    media = "text/csv; charset=utf-8" if form == "csv" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="flashwire-audit-{stamp}.{form}"'}
    return StreamingResponse(body(), media_type=media, headers=headers)


routes = [
    Route("/api/v1/audit", list_audit, methods=["GET"]),
    Route("/api/v1/audit/export", export_audit, methods=["GET"]),
]
