"""The audit trail: every applied editorial action with who, when, the edition, before and after.

The worker appends to the audit stream in the same atomic commit as the change
itself, so the trail cannot miss an action or record one that did not happen.
No endpoint changes or deletes an entry; the stream is trimmed to
FLASHWIRE_AUDIT_RETENTION_DAYS as entries are appended (workers/apply.py). Readers
filter by edition, editor, action and time range, page backwards, and export CSV or
JSON lines page by page.

Every request's work is bounded, whatever its filters: it examines at most SCAN_MAX entries
(an export: at least its `limit`), read from Redis in batches of SCAN_BATCH, and answers with
what matched among them and where the next request continues — the last entry *examined*, not
the last returned, so that a filter that matches little still moves on (`next_before` of a list
page; the closing `next_after` line or row of an export, since nothing can be said in a header
once a streamed body has started). The filters are applied to each entry's JSON before it is
validated, so an entry that does not match costs one `orjson.loads`. The export is streamed
batch by batch, so a node's memory does not grow with the trail (docs/api.md, "The audit trail").
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, get_args

import orjson
from pydantic import BaseModel, TypeAdapter
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from flashwire.core.clock import iso_from_ms, now_ms
from flashwire.core.cursors import U64_MAX, CursorKey, cursor_key
from flashwire.core.keys import Keys
from flashwire.core.models import (
    Actor,
    AuditEntry,
    AuditPage,
    AuditRecord,
    DeskAction,
    InstantOutOfRange,
    Line,
    TokenRecord,
    instant_ms,
)
from flashwire.core.settings import Settings
from flashwire.service.errors import ApiError
from flashwire.service.http import authenticate, model_response
from flashwire.service.tokens import ALL_EDITIONS, Token

PAGE_MAX = 500
# Entries read from Redis at a time (list and export): an export's memory is about one batch, held
# once as Redis's reply and once as the chunk written. Measured on 10,000 entries of ~2 KB of CSV each
# (tests/test_audit_export.py): node RSS +0.2 to +0.9 MB with 100, +3.5 MB with 250, +11 MB with 500.
SCAN_BATCH = 100
# The most entries one request examines: a list page always, an export when its `limit` is lower
# (an export examines up to its `limit`, so that an unfiltered export fills its pages). Examining
# is the request's cost whether or not an entry matches; at this size a sparse filter costs a
# node about 0.1 s per request over a trail of any length (measured with 60,000 entries,
# tests/test_audit_export.py), where 150,050 entries read whole took 2.5 s. It is 20 full list
# pages (PAGE_MAX), so a filter that matches one entry in 20 still fills a page.
SCAN_MAX = 10_000
CSV_COLUMNS = (
    "audit_id", "at", "actor", "role", "token", "action", "edition", "line_id",
    "reason", "before_text", "after_text", "before", "after",
)  # fmt: skip
# The header that tells an export's client the most entries this answer holds.
EXPORT_LIMIT_HEADER = "Flashwire-Export-Limit"
# Every export answer ends with where the next one starts: a JSON line {"next_after": <audit_id or
# null>}, or a CSV row whose first cell is "#next_after" and second the audit id (empty at the end).
NEXT_AFTER = "next_after"
CSV_NEXT_AFTER = "#next_after"
# The actions of token management, written by the API (service/account.py) and the CLI.
TOKEN_ACTIONS = ("token-create", "token-revoke")
# A spreadsheet takes a cell for a formula when its first character is one of these (OWASP, "CSV
# Injection"; `|` starts a DDE call in some), also past leading white space and format characters,
# and also as a full-width or small form that NFKC folds to one of them (U+FF1D, full-width `=`).
FORMULA_TRIGGERS = frozenset("=+-@|")
# ... or when it starts with a tab or a carriage return (OWASP), also past leading white space.
LEADING_TRIGGERS = ("\t", "\r")


def _desk_action_names() -> frozenset[str]:
    """The `action` of every desk action the worker applies and records (the variants of
    flashwire.core.models.DeskAction, each a Literal)."""
    union = get_args(DeskAction)[0]
    return frozenset(
        name for model in get_args(union) for name in get_args(model.model_fields["action"].annotation)
    )


# Every action an audit entry can have: the `action` filter accepts only these.
AUDIT_ACTIONS = _desk_action_names() | frozenset(TOKEN_ACTIONS)


@dataclass(frozen=True)
class AuditQuery:
    """Which entries to return."""

    editions: frozenset[str]
    editor: str | None
    action: str | None
    from_ms: int | None
    to_ms: int | None

    def accepts(self, record: Mapping[str, Any]) -> bool:
        """Does a stored audit record (its JSON, not yet validated) pass the filters?"""
        if record.get("edition") not in self.editions:
            return False
        if self.editor is not None and (record.get("actor") or {}).get("name") != self.editor:
            return False
        return self.action is None or record.get("action") == self.action


_ENTRY: TypeAdapter[AuditEntry] = TypeAdapter(AuditEntry)


def token_change(actor: Actor, action: str, before: TokenRecord | None, after: TokenRecord) -> AuditRecord:
    """The record of a token change (one of TOKEN_ACTIONS) made now, through the API
    (service/account.py) or from the shell (flashwire/cli.py): edition '*', no line."""
    if action not in TOKEN_ACTIONS:
        raise ValueError(f"a token change is one of {TOKEN_ACTIONS}, got {action!r}")
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
    the stream id returned. (The worker trims the stream as it appends desk actions.)"""
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
    action = params.get("action") or None
    if action is not None and action not in AUDIT_ACTIONS:
        raise ApiError(422, "invalid", f"must be one of {', '.join(sorted(AUDIT_ACTIONS))}", field="action")
    times: dict[str, int | None] = {}
    for name in ("from", "to"):
        value = params.get(name)
        try:
            # The one rule for times (flashwire.core.models.instant_ms): RFC 3339, within
            # INSTANT_RANGE once in UTC, where stream ids (and so audit ids) can be.
            times[name] = instant_ms(value) if value else None
        except InstantOutOfRange as exc:
            raise ApiError(422, "invalid", str(exc), field=name) from None
        except ValueError as exc:
            raise ApiError(422, "invalid", f"must be an RFC 3339 timestamp: {exc}", field=name) from None
    return AuditQuery(
        editions=editions,
        editor=params.get("editor") or None,
        action=action,
        from_ms=times["from"],
        to_ms=times["to"],
    )


def _audit_id(request: Request, name: str) -> CursorKey | None:
    """The audit id in query parameter `name` (`before`, `after`), by the one cursor rule
    (flashwire/core/cursors.py: `<ms>-<seq>` or `<ms>`, ASCII digits, each part below 2^64, nothing
    else, not even a trailing newline), or None if absent or empty; 422 naming `name` otherwise."""
    value = request.query_params.get(name) or None
    if value is None:
        return None
    try:
        return cursor_key(value)
    except ValueError:
        raise ApiError(
            422, "invalid", "must be an audit_id from an earlier answer (<ms>-<seq>)", field=name
        ) from None


def _limit(request: Request, default: int, maximum: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and 1 <= int(text) <= maximum):
        raise ApiError(422, "invalid", f"must be an integer from 1 to {maximum}", field="limit")
    return int(text)


class AuditScan:
    """One request's walk along the audit stream, from where the client left off (`start`,
    exclusive) in one direction, within the query's time range, reading at most `examine_max`
    entries in batches of SCAN_BATCH (one Redis read each).

    `batches()` yields the matching entries of each read (often none). Once it has ended,
    `last_examined` is the id of the last entry read and `exhausted` says whether the range holds
    nothing beyond it.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        query: AuditQuery,
        *,
        newest_first: bool,
        start: CursorKey | None,
        examine_max: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.query = query
        self.newest_first = newest_first
        self.start = start
        self.examine_max = examine_max
        self.last_examined: str | None = None
        self.exhausted = False

    def _bounds(self) -> tuple[str, str] | None:
        """(near, far): the XRANGE/XREVRANGE bounds to read from `start` (exclusive) towards the end
        of the time range; None when nothing can lie beyond `start`. "<ms>" bounds mean <ms>-0 as
        a lower and <ms>-<2^64-1> as an upper bound, so `from` and `to` are inclusive."""
        query, start = self.query, self.start
        lower = f"{query.from_ms}" if query.from_ms is not None else "-"
        upper = f"{query.to_ms}" if query.to_ms is not None else "+"
        if self.newest_first:
            if start == (0, 0):
                return None  # nothing is below the first possible id (and Redis refuses "(0-0")
            if start is not None and (query.to_ms is None or start <= (query.to_ms, U64_MAX)):
                upper = f"({start[0]}-{start[1]}"
            return upper, lower
        if start == (U64_MAX, U64_MAX):
            return None  # nothing is after the last possible id
        if start is not None and (query.from_ms is None or start >= (query.from_ms, 0)):
            lower = f"({start[0]}-{start[1]}"
        return lower, upper

    async def batches(self) -> AsyncGenerator[list[AuditEntry]]:
        """The matching entries of each Redis read, in the scan's order."""
        bounds = self._bounds()
        if bounds is None:
            self.exhausted = True
            return
        near, far = bounds
        examined = 0
        while not self.exhausted and examined < self.examine_max:
            count = min(SCAN_BATCH, self.examine_max - examined)
            if self.newest_first:
                batch = await self.redis.xrevrange(self.keys.audit, max=near, min=far, count=count)
            else:
                batch = await self.redis.xrange(self.keys.audit, min=near, max=far, count=count)
            examined += len(batch)
            self.exhausted = len(batch) < count
            if batch:
                self.last_examined = batch[-1][0].decode()
                near = f"({self.last_examined}"  # XADD never writes 0-0, so this is a valid interval
                if self.last_examined == f"{U64_MAX}-{U64_MAX}":
                    self.exhausted = True  # ... and nothing can follow the last possible id
            yield self._matching(batch)

    def _matching(self, batch: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> list[AuditEntry]:
        """The entries of a batch that pass the filters, validated (only those)."""
        matching = []
        for entry_id, fields in batch:
            stored = orjson.loads(fields[b"e"])
            if self.query.accepts(stored):
                matching.append(_ENTRY.validate_python({**stored, "audit_id": entry_id.decode()}))
        return matching


class AuditPageScan:
    """Up to `limit` matching entries of a scan, batch by batch, and `next`: where the next request
    starts (None: nothing further matches), set once `batches()` has ended.

    The next request starts after the last entry *examined*: after the page's last entry when the
    page filled up (the rest of that batch is examined again), else after the last entry the scan
    read, however few matched; None once the range is exhausted with every match returned.
    """

    def __init__(self, scan: AuditScan, limit: int) -> None:
        self.scan = scan
        self.limit = limit
        self.next: str | None = None

    async def batches(self) -> AsyncGenerator[list[AuditEntry]]:
        """The page's entries, one list per Redis read (possibly empty), `limit` in all at most."""
        taken = 0
        async with aclosing(self.scan.batches()) as batches:
            async for batch in batches:
                room = self.limit - taken
                part = batch[:room]
                taken += len(part)
                if len(batch) >= room:  # the page is full
                    last_match = len(batch) == room and self.scan.exhausted
                    self.next = None if last_match else part[-1].audit_id
                    yield part
                    return
                yield part
        self.next = None if self.scan.exhausted else self.scan.last_examined


async def list_audit(request: Request) -> Response:
    """GET /api/v1/audit: newest first; filters edition, editor, action, from, to; paging with
    `before`. At most `limit` entries, from at most SCAN_MAX examined: a page may hold fewer, even
    none, and `next_before` is null only when nothing further matches."""
    token = await authenticate(request)
    query = _query(request, token)
    limit = _limit(request, 100, PAGE_MAX)
    before = _audit_id(request, "before")
    scan = AuditScan(
        request.app.state.redis,
        request.app.state.keys,
        query,
        newest_first=True,
        start=before,
        examine_max=SCAN_MAX,
    )
    page = AuditPageScan(scan, limit)
    entries: list[AuditEntry] = []
    async for batch in page.batches():
        entries += batch
    return model_response(AuditPage(entries=entries, next_before=page.next))


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, as the OWASP "CSV Injection" page advises: a cell whose
    first character past white space and format characters (Unicode Cf: LRM, RLM, ALM, BOM,
    zero-width space, bidi isolates ...) is, once NFKC-folded, one of = + - @ | (so U+FF1D and
    U+FE62, a full-width `=` and a small `+`, count), or whose leading white space holds a tab or
    a carriage return, gets a single quote in front (`=HYPERLINK(...)` -> `'=HYPERLINK(...)`).
    Every cell is also quoted (csv.QUOTE_ALL), so no separator or quote inside a value can start
    a new cell."""
    for char in value:
        if char.isspace() or unicodedata.category(char) == "Cf":
            if char in LEADING_TRIGGERS:
                return "'" + value
            continue
        return "'" + value if unicodedata.normalize("NFKC", char)[:1] in FORMULA_TRIGGERS else value
    return value


def csv_row(entry: AuditEntry) -> list[str]:
    """An entry's cells in CSV_COLUMNS order, each neutralised (`csv_cell`)."""

    def text(record: object) -> str:
        return record.text if isinstance(record, Line) else ""

    def as_json(record: BaseModel | None) -> str:
        return "null" if record is None else record.model_dump_json()

    cells = [
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
    return [csv_cell(cell) for cell in cells]


def _csv(rows: Iterable[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows(rows)
    return buffer.getvalue().encode()


def export_end(form: str, next_after: str | None) -> bytes:
    """The closing line (JSON lines) or row (CSV) of every export answer: where the next page
    starts, or null (an empty cell) when the export is complete. A CSV row has every column, its
    third cell saying the same in words for whoever opens the file."""
    if form != "csv":
        return orjson.dumps({NEXT_AFTER: next_after}) + b"\n"
    note = (
        f"more may follow: export again with after={next_after}" if next_after else "the export is complete"
    )
    row = [CSV_NEXT_AFTER, next_after or "", note]
    return _csv([row + [""] * (len(CSV_COLUMNS) - len(row))])


async def _export_body(
    first: list[AuditEntry] | None, rest: AsyncIterator[list[AuditEntry]], page: AuditPageScan, form: str
) -> AsyncIterator[bytes]:
    """The export, one chunk per batch read from Redis (`first`, read before the answer started,
    then `rest`), closed by its `next_after` line or row."""
    if form == "csv":
        yield _csv([list(CSV_COLUMNS)])
    batch = first
    while batch is not None:
        if batch:
            if form == "csv":
                yield _csv(csv_row(entry) for entry in batch)
            else:
                yield b"".join(entry.model_dump_json().encode() + b"\n" for entry in batch)
        batch = await anext(rest, None)
    yield export_end(form, page.next)


async def export_audit(request: Request) -> Response:
    """GET /api/v1/audit/export?format=csv|jsonl: matching entries, oldest first, as a download.

    Query: the filters of the list (edition, editor, action, from, to); `after=<audit_id>`, the
    page to start after; `limit`, 1 to FLASHWIRE_AUDIT_EXPORT_MAX (its default). The answer is
    streamed (memory bounded by one batch) with header Flashwire-Export-Limit: <limit>; it
    examines at most max(limit, SCAN_MAX) entries and ends with where the next page starts
    (`export_end`). Bad values are 422 naming the parameter.
    """
    settings: Settings = request.app.state.settings
    token = await authenticate(request)
    query = _query(request, token)
    form = request.query_params.get("format", "jsonl")
    if form not in {"csv", "jsonl"}:
        raise ApiError(422, "invalid", "must be csv or jsonl", field="format")
    after = _audit_id(request, "after")
    limit = _limit(request, settings.audit_export_max, settings.audit_export_max)
    scan = AuditScan(
        request.app.state.redis,
        request.app.state.keys,
        query,
        newest_first=False,
        start=after,
        examine_max=max(limit, SCAN_MAX),
    )
    page = AuditPageScan(scan, limit)
    batches = page.batches()
    # The first read happens before the answer starts, so that Redis being down is a 503, not a
    # 200 cut short; a failure later aborts the connection (no final chunk, no closing line), never
    # a short file that looks complete.
    first = await anext(batches, None)
    stamp = iso_from_ms(now_ms()).replace(":", "")
    media = "text/csv; charset=utf-8" if form == "csv" else "application/x-ndjson"
    headers = {
        "Content-Disposition": f'attachment; filename="flashwire-audit-{stamp}.{form}"',
        EXPORT_LIMIT_HEADER: str(limit),
        "Cache-Control": "no-store",
    }
    return StreamingResponse(_export_body(first, batches, page, form), media_type=media, headers=headers)


routes = [
    Route("/api/v1/audit", list_audit, methods=["GET"]),
    Route("/api/v1/audit/export", export_audit, methods=["GET"]),
]
