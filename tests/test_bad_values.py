"""Values that used to crash a request (500) are refused with a 4xx naming the field (issue 10,
finding 6), against a real `flashwire serve` and worker.

Times: every time a client sends goes through one rule (flashwire.core.models.instant_ms: RFC 3339
with an offset, within 1970-01-01T00:00:00Z..9999-12-31T23:59:59.999Z once in UTC), so
`9999-12-31T23:59:59-14:00` (year 10000 in UTC) is a 422 naming `expires_at` or `embargo_until`
wherever it is sent, and `from` / `to` outside the range a 422 naming them. Audit ids (`before`,
`after`) go through the one cursor rule (flashwire/core/cursors.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flashwire.core.cursors import U64_MAX
from tests.conftest import Stack, auth, post_line

YEAR_10000 = "9999-12-31T23:59:59-14:00"  # 10000-01-01T13:59:59Z
BEFORE_1970 = "1969-12-31T23:59:59Z"
YEAR_1 = "0001-01-01T00:00:00+01:00"  # year 0 once in UTC


def _wrong(response: httpx.Response, field: str) -> str | None:
    """Why `response` is not a 4xx JSON error naming `field`, or None if it is."""
    if not 400 <= response.status_code < 500:
        return f"{response.status_code} {response.text[:80]!r}"
    error = response.json()["error"]
    if error["field"] != field or error["status"] != response.status_code:
        return f"{response.status_code} naming {error.get('field')!r}"
    return None


async def _refusals_missed(
    client: httpx.AsyncClient, requests: list[tuple[str, str, dict[str, Any], str]]
) -> list[str]:
    """Each (method, path, body or query, field) sent in turn; what did not come back as a 4xx naming
    its field (all of them are listed, so a failure shows every value at fault at once)."""
    missed = []
    for method, path, values, field in requests:
        try:
            if method == "POST":
                response = await client.post(path, json=values)
            else:
                response = await client.get(path, params=values)
        except httpx.TransportError as exc:  # uvicorn drops a keep-alive connection after a 500
            missed.append(f"{method} {path} {values!r}: {type(exc).__name__}")
            continue
        why = _wrong(response, field)
        if why is not None:
            missed.append(f"{method} {path} {values!r}: {why}")
    return missed


@pytest.mark.timeout(60)
async def test_times_past_year_9999_in_utc_are_refused_naming_the_field_on_every_write(stack: Stack) -> None:
    """A post (expires_at, embargo_until), a correction and a change of expiry, each with a time in
    year 10000 once in UTC: 422 naming the field (was 500, 'year 10000 is out of range'); an embargo
    at the very last instant leaves no room for the default expiry: 422 naming embargo_until."""
    worker = stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url, headers=auth(chief), timeout=10) as client:
        line = await post_line(client, chief, "Storm warning")
        scheduled = await post_line(client, chief, "Embargoed", embargo_until="2099-01-01T00:00:00Z")
        await stack.until_applied()
        writes: list[tuple[str, dict[str, Any], str]] = [
            ("/api/v1/lines", {"edition": "en", "text": "x", "expires_at": YEAR_10000}, "expires_at"),
            ("/api/v1/lines", {"edition": "en", "text": "x", "embargo_until": YEAR_10000}, "embargo_until"),
            (
                "/api/v1/lines",
                {"edition": "en", "text": "x", "embargo_until": "9999-12-31T23:59:59.999Z"},
                "embargo_until",
            ),
            (
                "/api/v1/lines",
                {"edition": "en", "text": "x", "expires_at": "10000-01-01T00:00:00Z"},
                "expires_at",
            ),
            (f"/api/v1/lines/{line['id']}/corrections", {"expires_at": YEAR_10000}, "expires_at"),
            (f"/api/v1/lines/{line['id']}/expiry", {"expires_at": YEAR_10000}, "expires_at"),
            (f"/api/v1/lines/{scheduled['id']}/corrections", {"expires_at": YEAR_10000}, "expires_at"),
            (f"/api/v1/lines/{scheduled['id']}/expiry", {"expires_at": YEAR_10000}, "expires_at"),
        ]
        missed = await _refusals_missed(client, [("POST", path, body, field) for path, body, field in writes])
        assert not missed, "\n".join(missed)
        # The last instant itself is a valid time, and a line embargoed until late in year 9999 gets
        # a default expiry clamped to it instead of one that cannot be written.
        late = await post_line(client, chief, "Far future", embargo_until="9999-12-31T23:00:00Z")
        assert late["line"]["expires_at"] == "9999-12-31T23:59:59.999Z"
        await stack.until_applied()
        stored = (await client.get(f"/api/v1/lines/{late['id']}")).json()["line"]
        assert stored["embargoed"] == "9999-12-31T23:00:00.000Z", stored
    log = node.log()
    assert "Traceback" not in log and '" 500' not in log, log[-4000:]
    assert "Traceback" not in worker.log(), worker.log()[-4000:]


@pytest.mark.timeout(60)
async def test_audit_cursors_and_times_out_of_range_are_refused_naming_the_parameter(stack: Stack) -> None:
    """On the audit list and export: `before` / `after` with a trailing newline or a part above
    2^64 - 1 (422 naming it), `before=0-0` (an empty page, was 500 'invalid end ID for the
    interval'), `after` the largest id (an empty export), `from` / `to` before 1970 or past year
    9999 in UTC (422 naming them), a `limit` of other digits or thousands of them (422)."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["*"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url, headers=auth(chief), timeout=10) as client:
        await post_line(client, chief, "Storm warning")
        await stack.until_applied()
        refusals: list[tuple[str, dict[str, str], str]] = []
        for path in ("/api/v1/audit", "/api/v1/audit/export"):
            cursor = "before" if path == "/api/v1/audit" else "after"
            for bad in (
                "1-0\n",
                "1\n",
                "1-0\x85",
                f"{U64_MAX + 1}",
                f"1-{U64_MAX + 1}",
                " 1-0",
                "1-0-0",
                "\u0661-0",
            ):
                refusals.append((path, {cursor: bad}, cursor))
            for name in ("from", "to"):
                for bad in (
                    BEFORE_1970,
                    YEAR_1,
                    YEAR_10000,
                    "2026-11-25T18:00:00Z\n",
                    "2026-13-01T00:00:00Z",
                ):
                    refusals.append((path, {name: bad}, name))
            for bad in ("\u00b2", "1" * 5000, "0", "-1"):
                refusals.append((path, {"limit": bad}, "limit"))
        missed = await _refusals_missed(
            client, [("GET", path, query, field) for path, query, field in refusals]
        )
        assert not missed, "\n".join(missed)
        empty = await client.get("/api/v1/audit", params={"before": "0-0"})
        assert empty.status_code == 200 and empty.json() == {"entries": [], "next_before": None}
        largest = f"{U64_MAX}-{U64_MAX}"
        assert (await client.get("/api/v1/audit", params={"before": largest})).json()["entries"]
        nothing = await client.get("/api/v1/audit/export", params={"after": largest})
        assert nothing.status_code == 200 and nothing.text == '{"next_after":null}\n'
        everything = await client.get("/api/v1/audit/export", params={"after": "0-0"})
        assert everything.status_code == 200 and everything.text.count("\n") == 2  # the entry, the end
    log = node.log()
    assert "Traceback" not in log and '" 500' not in log, log[-4000:]
