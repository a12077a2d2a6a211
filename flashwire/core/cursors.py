"""The one cursor rule: what a ticker cursor is, how it is parsed and how two are compared.

A cursor is a Redis stream entry id, `<ms>-<seq>`, or a bare `<ms>` meaning `<ms>-0`
(Redis Streams, "Entry IDs"; docs/protocol.md 8.1). Both parts are unsigned 64-bit
integers written in ASCII digits, nothing else: no sign, no spaces, no underscores, no
other scripts' digits (which `int()` would all accept), and no trailing newline (which
`re.match(r"^…$")` would accept, and which would then split the SSE `id:` line a cursor
is echoed in). Every place that reads a cursor from a client, from Redis or from a
server message goes through `cursor_key`, so every reader of the protocol agrees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["CURSOR_PATTERN", "START", "U64_MAX", "CursorKey", "cursor_key", "is_cursor", "parse_since"]

U64_MAX = 2**64 - 1
# At most 20 digits (len(str(U64_MAX))); the value bound is checked after the match.
CURSOR_PATTERN = r"[0-9]{1,20}(?:-[0-9]{1,20})?"
_CURSOR = re.compile(CURSOR_PATTERN)
# "From the start of the log" (docs/protocol.md 8.3).
START = "0-0"

CursorKey = tuple[int, int]


def cursor_key(cursor: str) -> CursorKey:
    """The sortable (ms, seq) form of a cursor: '1732550400000-3' -> (1732550400000, 3), '9' -> (9, 0).

    Raises ValueError (naming the cursor) if it is not exactly `<digits>` or `<digits>-<digits>`
    with both parts at most 2^64 - 1.
    """
    if not isinstance(cursor, str) or _CURSOR.fullmatch(cursor) is None:
        raise ValueError(f"malformed cursor {cursor!r}")
    ms, _, seq = cursor.partition("-")
    key = int(ms), int(seq) if seq else 0
    if key[0] > U64_MAX or key[1] > U64_MAX:
        raise ValueError(f"malformed cursor {cursor!r}")
    return key


def is_cursor(value: object) -> bool:
    """Does `value` follow the cursor rule?"""
    if not isinstance(value, str):
        return False
    try:
        cursor_key(value)
    except ValueError:
        return False
    return True


def parse_since(value: str, editions: Sequence[str]) -> dict[str, str]:
    """Resume cursors written in the query syntax (docs/protocol.md 2.1) as {edition: cursor}.

    `en:<cursor>,ar:<cursor>` names the edition of each cursor (spaces around a pair are
    ignored, an empty pair is skipped; any other character, a newline above all, breaks the
    cursor rule); a bare `<cursor>` (no `:`) stands for the one edition of
    `editions` and is taken as it is, so that a trailing newline is refused, not trimmed. The URL
    query, the `since` string of a subscribe message (service/subscription.py) and `flashwire
    listen --since` (flashwire/cli.py) all read it here. Whether each edition is subscribed is
    the caller's check.

    Raises ValueError saying what is wrong: a bare cursor when `editions` is not exactly one
    edition, a pair without its edition, or a cursor that breaks the cursor rule (`cursor_key`),
    as "malformed cursor '<cursor>' for '<edition>'".
    """
    if ":" not in value:
        if len(editions) != 1:
            raise ValueError("name the edition of each cursor: en:<cursor>,ar:<cursor>")
        if not is_cursor(value):
            raise ValueError(f"malformed cursor {value!r} for {editions[0]!r}")
        return {editions[0]: value}
    cursors: dict[str, str] = {}
    # Only spaces around a pair are ignored: `str.strip()` would also drop a newline (and any
    # other whitespace, NEL and U+2028 included), which the one rule refuses everywhere.
    for pair in (part.strip(" ") for part in value.split(",")):
        if not pair:
            continue
        edition, separator, cursor = pair.partition(":")
        if not separator or not edition:
            raise ValueError("name the edition of each cursor: en:<cursor>,ar:<cursor>")
        if not is_cursor(cursor):
            raise ValueError(f"malformed cursor {cursor!r} for {edition!r}")
        cursors[edition] = cursor
    return cursors


def cursor_set(cursors: Mapping[str, str]) -> str:
    """{edition: cursor} written as one string, `ar:<cursor>,en:<cursor>` (editions sorted): the
    SSE event id (docs/protocol.md 15), which `parse_since` reads back as a `Last-Event-ID`."""
    return ",".join(f"{edition}:{cursor}" for edition, cursor in sorted(cursors.items()))
