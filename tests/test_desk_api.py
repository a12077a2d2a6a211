"""The editorial workflow through the API: roles, scheduling, pinning, expiry, reach and the audit trail.

Workflows that need the worker's fan-out or readers run against processes (`stack`); what the service
alone answers (the desk page, token administration) runs in-process (`app`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import InProcessApp, Reader, Stack, auth, open_reader, post_line


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def _action(
    client: httpx.AsyncClient, token: str, line_id: str, action: str, body: Any = None
) -> httpx.Response:
    return await client.post(f"/api/v1/lines/{line_id}/{action}", json=body, headers=auth(token))


async def test_editor_cannot_retract_pin_schedule_or_post_elsewhere_but_chief_can(stack: Stack) -> None:
    """Roles are enforced by the server: an editor may post and correct in its editions only;
    a chief may also retract, pin, schedule and cancel."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"], name="Eddie")
    chief = await stack.token("chief", ["en"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, editor, "Storm warning")
        await stack.until_applied()
        assert (
            await _action(client, editor, line["id"], "corrections", {"text": "Storm warning upgraded"})
        ).status_code == 201
        for action in ("retraction", "pin"):
            response = await _action(client, editor, line["id"], action)
            assert response.status_code == 403, (action, response.text)
            assert response.json()["error"]["code"] == "forbidden"
        scheduled = await client.post(
            "/api/v1/lines",
            json={"edition": "en", "text": "Embargoed", "embargo_until": _in(60)},
            headers=auth(editor),
        )
        assert scheduled.status_code == 403
        elsewhere = await client.post(
            "/api/v1/lines", json={"edition": "ar", "text": "x"}, headers=auth(editor)
        )
        assert elsewhere.status_code == 403
        # The chief can do all of it.
        assert (await _action(client, chief, line["id"], "pin")).status_code == 201
        scheduled = await client.post(
            "/api/v1/lines",
            json={"edition": "en", "text": "Embargoed", "embargo_until": _in(60)},
            headers=auth(chief),
        )
        assert scheduled.status_code == 201 and scheduled.json()["scheduled"] is True
        await stack.until_applied()
        assert (await _action(client, editor, scheduled.json()["id"], "cancellation")).status_code == 403
        assert (await _action(client, chief, scheduled.json()["id"], "cancellation")).status_code == 201
        assert (
            await _action(client, chief, line["id"], "retraction", {"reason": "unconfirmed"})
        ).status_code == 201
        await stack.until_applied()
        # A second retraction is refused with a clear conflict.
        again = await _action(client, chief, line["id"], "retraction")
        assert again.status_code == 409 and "retracted" in again.json()["error"]["message"]
        # Token management is for admins only.
        for token in (editor, chief):
            assert (await client.get("/api/v1/tokens", headers=auth(token))).status_code == 403
        admin = await stack.token("admin", ["*"], name="Ada")
        created = await client.post(
            "/api/v1/tokens",
            json={"name": "Nadia", "role": "editor", "editions": ["ar"]},
            headers=auth(admin),
        )
        assert created.status_code == 201 and created.json()["token"].startswith("fwt_")
        me = (await client.get("/api/v1/me", headers=auth(created.json()["token"]))).json()
        assert me["name"] == "Nadia" and me["editions"] == ["ar"] and "retract" not in me["actions"]


@pytest.mark.slow
# On a Cluster once: across a worker restart, arq (on its own Redis) still releases the line.
@pytest.mark.parametrize(
    ("stack", "restart_worker"),
    [("single", False), ("single", True), ("cluster", True)],
    indirect=["stack"],
)
async def test_scheduled_line_is_released_on_time_and_cancelled_one_never_appears(
    stack: Stack, readers: list[Reader], restart_worker: bool
) -> None:
    """A line scheduled 3 s ahead reaches readers between 3 and 4 s later, also across a worker
    restart; a cancelled one never reaches any ticker stream."""
    worker = stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=node.url) as client:
        started = time.time()
        release_at = started + 3
        response = await client.post(
            "/api/v1/lines",
            json={
                "edition": "en",
                "text": "Embargoed results",
                "embargo_until": datetime.fromtimestamp(release_at, UTC).isoformat(),
            },
            headers=auth(chief),
        )
        assert response.status_code == 201
        scheduled_id = response.json()["id"]
        cancelled = await client.post(
            "/api/v1/lines",
            json={"edition": "en", "text": "Never to be seen", "embargo_until": _in(2)},
            headers=auth(chief),
        )
        cancelled_id = cancelled.json()["id"]
        await stack.until_applied()
        listing = (await client.get("/api/v1/editions/en/scheduled", headers=auth(chief))).json()
        assert [line["id"] for line in listing["lines"]] == [cancelled_id, scheduled_id]
        assert (await client.get("/api/v1/editions/en/lines", headers=auth(chief))).json()["lines"] == []
        assert (await _action(client, chief, cancelled_id, "cancellation")).status_code == 201
        if restart_worker:
            await stack.until_applied()  # the cancellation is in before the worker dies
            worker.kill()
            await asyncio.sleep(1.0)
            worker.start()
        event = await reader.next_of("line", timeout_s=6)
        arrived = time.time()
        assert event["line"]["id"] == scheduled_id and event["line"]["text"] == "Embargoed results"
        assert release_at <= arrived < release_at + 1.0, arrived - release_at
        await asyncio.sleep(1.5)
    redis = stack.redis()
    try:
        for edition in ("en", "ar", "es"):
            entries = await redis.xrange(stack.keys.ticker(edition))
            assert all(cancelled_id.encode() not in fields[b"d"] for _, fields in entries)
    finally:
        await redis.aclose()
    assert all(m.get("line", {}).get("id") != cancelled_id for m in reader.messages)


async def test_pin_puts_a_line_first_and_expiry_can_be_changed(stack: Stack, readers: list[Reader]) -> None:
    """Pinning sends readers an update and leads the snapshot; an expiry change is stored and audited."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    readers.append(reader)
    await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=node.url) as client:
        older = await post_line(client, chief, "older")
        await post_line(client, chief, "newer")
        await reader.events(2)
        assert (await _action(client, chief, older["id"], "pin")).status_code == 201
        [pinned] = await reader.events(1)
        assert pinned["type"] == "update" and pinned["change"] == "pin" and pinned["line"]["pinned"] is True
        fresh = await open_reader(node.ws_url, "editions=en")
        readers.append(fresh)
        snapshot = await fresh.next_of("snapshot")
        assert [line["text"] for line in snapshot["lines"]] == ["older", "newer"]
        new_expiry = _in(7200)
        assert (
            await _action(client, chief, older["id"], "expiry", {"expires_at": new_expiry})
        ).status_code == 201
        bad = await _action(client, chief, older["id"], "expiry", {"expires_at": _in(-5)})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "expires_at"
        await stack.until_applied()
        line = (await client.get(f"/api/v1/lines/{older['id']}", headers=auth(chief))).json()["line"]
        assert (
            abs(
                datetime.fromisoformat(line["expires_at"]).timestamp()
                - datetime.fromisoformat(new_expiry).timestamp()
            )
            < 0.01
        )


async def test_reach_sums_deliveries_over_two_nodes(stack: Stack, readers: list[Reader]) -> None:
    """The reach of a line equals the number of subscribers that received it, over two service nodes."""
    stack.worker()
    first, second = stack.service(), stack.service()
    editor = await stack.token("editor", ["en"])
    on_first = [await open_reader(first.ws_url, "editions=en") for _ in range(3)]
    on_second = [await open_reader(second.ws_url, "editions=en") for _ in range(5)]
    filtered_out = [await open_reader(second.ws_url, "editions=en&topics=sports") for _ in range(2)]
    other_edition = [await open_reader(first.ws_url, "editions=ar")]
    everyone = on_first + on_second + filtered_out + other_edition
    readers.extend(everyone)
    for reader in everyone:
        await reader.next_of("snapshot")
    async with httpx.AsyncClient(base_url=first.url) as client:
        posted = await post_line(client, editor, "Reach me", topics=["politics"])
        for reader in on_first + on_second:
            await reader.events(1)
        response = await client.post(
            f"/api/v1/lines/{posted['id']}/corrections",
            json={"text": "Reach me, corrected"},
            headers=auth(editor),
        )
        assert response.status_code == 201
        for reader in on_first + on_second:
            await reader.events(1)
        deadline = time.monotonic() + 5
        while True:
            detail = (await client.get(f"/api/v1/lines/{posted['id']}", headers=auth(editor))).json()
            if detail["reach"].get("2", {}).get("readers") == 8 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert detail["reach"]["1"]["readers"] == 8
        assert detail["reach"]["2"]["readers"] == 8
        assert detail["reach"]["1"]["nodes"] == 2
        assert 0 <= detail["reach"]["1"]["ms"] < 2000
        listing = (await client.get("/api/v1/editions/en/lines", headers=auth(editor))).json()
        assert listing["lines"][0]["reach"]["readers"] == 8


async def test_audit_trail_records_every_action_with_actor_before_after_and_cannot_be_changed(
    stack: Stack,
) -> None:
    """Every action is in the audit trail with who, when, edition, before and after; filters and
    exports work; no endpoint changes or deletes entries."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en", "ar"], name="Eddie")
    chief = await stack.token("chief", ["en", "ar"], name="Chiara")
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, editor, "Original text")
        arabic = await post_line(client, editor, "خبر عاجل", edition="ar")
        await stack.until_applied()
        await _action(client, editor, line["id"], "corrections", {"text": "Corrected text"})
        await _action(client, chief, line["id"], "pin")
        await _action(client, chief, line["id"], "retraction", {"reason": "wrong"})
        # Rejected actions leave no trace.
        assert (await _action(client, editor, arabic["id"], "retraction")).status_code == 403
        await stack.until_applied()
        page = (await client.get("/api/v1/audit", params={"edition": "en"}, headers=auth(chief))).json()
        entries = list(reversed(page["entries"]))
        assert [(e["action"], e["actor"]["name"], e["actor"]["role"]) for e in entries] == [
            ("post", "Eddie", "editor"),
            ("correct", "Eddie", "editor"),
            ("pin", "Chiara", "chief"),
            ("retract", "Chiara", "chief"),
        ]
        post, correct, pin, retract = entries
        assert post["before"] is None and post["after"]["text"] == "Original text"
        assert correct["before"]["text"] == "Original text" and correct["after"]["text"] == "Corrected text"
        assert pin["before"]["pinned"] is False and pin["after"]["pinned"] is True
        assert retract["after"]["status"] == "canceled" and retract["reason"] == "wrong"
        assert all(e["edition"] == "en" and e["line_id"] == line["id"] for e in entries)
        # Filters.
        by_chief = (
            await client.get("/api/v1/audit", params={"editor": "Chiara"}, headers=auth(chief))
        ).json()
        assert {e["action"] for e in by_chief["entries"]} == {"pin", "retract"}
        arabic_only = (
            await client.get("/api/v1/audit", params={"edition": "ar"}, headers=auth(chief))
        ).json()
        assert [e["line_id"] for e in arabic_only["entries"]] == [arabic["id"]]
        future = (await client.get("/api/v1/audit", params={"from": _in(60)}, headers=auth(chief))).json()
        assert future["entries"] == []
        paged = (await client.get("/api/v1/audit", params={"limit": 2}, headers=auth(chief))).json()
        assert len(paged["entries"]) == 2 and paged["next_before"]
        rest = (
            await client.get(
                "/api/v1/audit", params={"limit": 10, "before": paged["next_before"]}, headers=auth(chief)
            )
        ).json()
        assert len(paged["entries"]) + len(rest["entries"]) == 5
        outsider = await stack.token("chief", ["es"])
        assert (
            await client.get("/api/v1/audit", params={"edition": "en"}, headers=auth(outsider))
        ).status_code == 403
        # Exports.
        jsonl = await client.get(
            "/api/v1/audit/export", params={"format": "jsonl", "edition": "en"}, headers=auth(chief)
        )
        assert jsonl.status_code == 200 and "attachment" in jsonl.headers["content-disposition"]
        *exported_lines, end = jsonl.text.splitlines()  # the last line: {"next_after": null}
        assert orjson.loads(end) == {"next_after": None}
        exported = [orjson.loads(row) for row in exported_lines]
        assert [e["action"] for e in exported] == ["post", "correct", "pin", "retract"]
        exported_csv = await client.get("/api/v1/audit/export", params={"format": "csv"}, headers=auth(chief))
        *rows, end_row = list(csv.DictReader(io.StringIO(exported_csv.text)))
        assert end_row["audit_id"] == "#next_after" and end_row["at"] == ""  # the export is complete
        assert len(rows) == 5
        assert {(r["action"], r["actor"]) for r in rows} >= {("correct", "Eddie"), ("retract", "Chiara")}
        correct_row = next(r for r in rows if r["action"] == "correct")
        assert correct_row["before_text"] == "Original text" and correct_row["after_text"] == "Corrected text"
        # Append-only: no method changes it.
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            response = await client.request(method, "/api/v1/audit", headers=auth(chief))
            assert response.status_code == 405, method
            response = await client.request(method, f"/api/v1/audit/{post['audit_id']}", headers=auth(chief))
            assert response.status_code in (404, 405), method
        again = (await client.get("/api/v1/audit", params={"edition": "en"}, headers=auth(chief))).json()
        assert again["entries"] == page["entries"]


async def test_shortening_expiry_needs_a_chief_and_retries_replay_the_first_result(stack: Stack) -> None:
    """An editor may extend a line's expiry but not bring it forward (that would retract it by
    another name); a retried action with the same Idempotency-Key gets its first result back."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    chief = await stack.token("chief", ["en"])
    async with httpx.AsyncClient(base_url=node.url) as client:
        line = await post_line(client, editor, "Curfew extended", expires_at=_in(3600))
        await stack.until_applied()
        shorter = await _action(client, editor, line["id"], "expiry", {"expires_at": _in(5)})
        assert shorter.status_code == 403 and shorter.json()["error"]["field"] == "expires_at"
        via_correction = await _action(client, editor, line["id"], "corrections", {"expires_at": _in(5)})
        assert via_correction.status_code == 403
        assert (
            await _action(client, editor, line["id"], "expiry", {"expires_at": _in(7200)})
        ).status_code == 201
        assert (
            await _action(client, chief, line["id"], "expiry", {"expires_at": _in(600)})
        ).status_code == 201
        headers = {**auth(chief), "Idempotency-Key": "kill-curfew-1"}
        first = await client.post(f"/api/v1/lines/{line['id']}/retraction", headers=headers)
        await stack.until_applied()
        again = await client.post(f"/api/v1/lines/{line['id']}/retraction", headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        fresh = await client.post(f"/api/v1/lines/{line['id']}/retraction", headers=auth(chief))
        assert fresh.status_code == 409


async def test_desk_page_is_only_served_with_its_security_headers(app: InProcessApp) -> None:
    """/desk carries a strict CSP and no-store; the same file under /web is not served."""
    client = app.client
    page = await client.get("/desk")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert (await client.get("/web/desk/index.html")).status_code == 404
    assert (await client.get("/web/desk/desk.js")).status_code == 200


async def test_scoped_admin_manages_only_tokens_within_its_editions(app: InProcessApp) -> None:
    """An admin of one edition sees, creates and revokes only non-admin tokens of that edition."""
    scoped = await app.token("admin", ["es"], name="Sofia")
    await app.token("admin", ["*"], name="Root")
    await app.token("editor", ["en"], name="Eddie")
    spanish = await app.token("editor", ["es"], name="Elena")
    client = app.client
    listed = (await client.get("/api/v1/tokens", headers=auth(scoped))).json()["tokens"]
    assert [t["name"] for t in listed] == ["Elena"]
    for body in (
        {"name": "X", "role": "editor", "editions": ["en"]},
        {"name": "Y", "role": "admin", "editions": ["es"]},
    ):
        assert (await client.post("/api/v1/tokens", json=body, headers=auth(scoped))).status_code == 403
    made = await client.post(
        "/api/v1/tokens", json={"name": "Z", "role": "chief", "editions": ["es"]}, headers=auth(scoped)
    )
    assert made.status_code == 201
    root_admin = await app.token("admin", ["*"])
    everyone = (await client.get("/api/v1/tokens", headers=auth(root_admin))).json()["tokens"]
    root = next(t for t in everyone if t["name"] == "Root")
    assert (await client.post(f"/api/v1/tokens/{root['id']}/revoke", headers=auth(scoped))).status_code == 404
    elena_id = spanish.split("_")[1]
    assert (await client.post(f"/api/v1/tokens/{elena_id}/revoke", headers=auth(scoped))).status_code == 200
