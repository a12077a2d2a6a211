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

__all__ = ["CURSOR_PATTERN", "START", "U64_MAX", "CursorKey", "cursor_key", "is_cursor"]

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
