"""The `flashwire` command as an editor and an operator use it, against a real stack: posting with
--link, correcting, retracting, pinning, listing, the API's refusals, --server and the refused
--url, and `listen` across a restart of its service node."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, Reader, ServiceNode, Stack, auth, open_reader, post_line

FLASHWIRE = str(Path(sys.executable).parent / "flashwire")


def _run(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`flashwire ARGS` as a process with the stack's environment plus `env`, to its end."""
    return subprocess.run(
        [FLASHWIRE, *args], env={**stack.env, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def flashwire(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_run, stack, *args, **env)


async def _started(stack: Stack) -> tuple[ServiceNode, str, Reader]:
    """A worker and a service, a chief editor's token for en, and a reader of the en ticker."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    reader = await open_reader(node.ws_url, "editions=en")
    await reader.next_of("snapshot")
    return node, chief, reader


async def _line(node: ServiceNode, token: str, line_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=node.url) as api:
        response = await api.get(f"/api/v1/lines/{line_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    line: dict[str, Any] = response.json()["line"]
    return line


async def test_post_correct_pin_lines_unpin_retract(stack: Stack) -> None:
    """Each command does what the desk's button does, seen by a ticker reader and through the API:
    `post --link` sets the story link, `correct` only what it is given, `pin`/`unpin`, `lines`
    (newest first, times in the local zone with abbreviation and offset; --json the API's answer),
    `retract --reason`. The server comes from --server or $FLASHWIRE_URL."""
    node, chief, reader = await _started(stack)
    try:
        common = ("--server", node.url, "--token", chief)
        posted = await flashwire(
            stack,
            "post",
            *common,
            "--urgency",
            "urgent",
            "--link",
            "https://example.com/story",
            "Quake",
            "hits",
        )
        assert posted.returncode == 0, posted.stderr
        line_id = re.match(r"posted (en-[0-9a-f]{16}) to en", posted.stdout)[1]  # type: ignore[index]
        [event] = await reader.events(1)
        assert event["type"] == "line" and event["line"]["url"] == "https://example.com/story"
        assert event["line"]["text"] == "Quake hits"

        corrected = await flashwire(
            stack, "correct", line_id, *common, "Quake", "hits", "Chile", "--urgency", "flash"
        )
        assert corrected.returncode == 0, corrected.stderr
        assert re.match(rf"corrected {line_id} \(text, urgency\) at ", corrected.stdout), corrected.stdout
        [event] = await reader.events(1)
        assert event["change"] == "correction" and event["line"]["text"] == "Quake hits Chile"
        assert event["line"]["urgency"] == "flash" and event["line"]["url"] == "https://example.com/story"

        pinned = await flashwire(stack, "pin", line_id, *common)
        assert pinned.returncode == 0 and pinned.stdout.startswith(f"pinned {line_id} at "), pinned
        [event] = await reader.events(1)
        assert event["change"] == "pin" and event["line"]["pinned"] is True

        async with httpx.AsyncClient(base_url=node.url) as api:
            later = await post_line(api, chief, "A later line")
        await reader.events(1)
        # The server from $FLASHWIRE_URL; the times in the zone of TZ.
        listed = await flashwire(stack, "lines", "--token", chief, FLASHWIRE_URL=node.url, TZ="Asia/Kolkata")
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()
        assert [row.split()[0] for row in rows] == [later["id"], line_id], "newest first"
        assert re.fullmatch(
            rf"{line_id}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d IST \(UTC\+05:30\)  "
            "FLASH   PINNED Quake hits Chile",
            rows[1],
        ), rows
        as_json = await flashwire(stack, "lines", *common, "--json")
        answer = json.loads(as_json.stdout)
        assert answer["edition"] == "en" and {line["id"] for line in answer["lines"]} == {
            line_id,
            later["id"],
        }

        unpinned = await flashwire(stack, "unpin", line_id, *common)
        assert unpinned.returncode == 0 and unpinned.stdout.startswith(f"unpinned {line_id} at "), unpinned
        [event] = await reader.events(1)
        assert event["change"] == "unpin" and event["line"]["pinned"] is False

        retracted = await flashwire(stack, "retract", line_id, *common, "--reason", "Wrong country")
        assert retracted.returncode == 0 and retracted.stdout.startswith(f"retracted {line_id} at "), (
            retracted
        )
        [event] = await reader.events(1)
        assert event["type"] == "retract" and event["line"]["id"] == line_id
        assert (await _line(node, chief, line_id))["status"] == "canceled"
    finally:
        await reader.ws.close()


async def test_each_invocation_is_one_action_and_a_repeated_key_is_not_taken_twice(stack: Stack) -> None:
    """Every write sends an Idempotency-Key: a new one per invocation (two posts, two lines), and a
    key given again returns the first answer instead of posting again."""
    node, chief, reader = await _started(stack)
    try:
        common = ("--server", node.url, "--token", chief)
        first = await flashwire(stack, "post", *common, "Same", "text")
        second = await flashwire(stack, "post", *common, "Same", "text")
        assert first.stdout.split()[1] != second.stdout.split()[1]
        keyed = [
            await flashwire(stack, "post", *common, "--idempotency-key", "k-1", "Once") for _ in range(2)
        ]
        assert keyed[0].returncode == keyed[1].returncode == 0
        assert keyed[0].stdout == keyed[1].stdout
        assert [e["line"]["text"] for e in await reader.events(3)] == ["Same text", "Same text", "Once"]
        listed = json.loads((await flashwire(stack, "lines", *common, "--json")).stdout)
        assert sorted(line["text"] for line in listed["lines"]) == ["Once", "Same text", "Same text"]
    finally:
        await reader.ws.close()


async def test_refusals_print_status_code_field_and_message(stack: Stack) -> None:
    """A refusal prints the API's status, code, field and message on stderr and exits 1; a command
    that cannot be sent as typed exits 2 without a request."""
    node, chief, reader = await _started(stack)
    try:
        editor = await stack.token("editor", ["en"])
        async with httpx.AsyncClient(base_url=node.url) as api:
            line = await post_line(api, chief, "A line to keep")
        bad_link = await flashwire(
            stack, "post", "--server", node.url, "--token", chief, "--link", "ftp://x", "T"
        )
        assert bad_link.returncode == 1
        assert "flashwire: refused (422 invalid, field url): " in bad_link.stderr, bad_link.stderr
        retract = await flashwire(stack, "retract", line["id"], "--server", node.url, "--token", editor)
        assert retract.returncode == 1
        assert "flashwire: refused (403 forbidden): an editor token for en may not retract in 'en'" in (
            retract.stderr
        ), retract.stderr
        unknown = await flashwire(stack, "pin", "en-0000000000000000", "--server", node.url, "--token", chief)
        assert unknown.returncode == 1 and "(404 not_found, field id)" in unknown.stderr, unknown.stderr
        nothing = await flashwire(stack, "correct", line["id"], "--server", node.url, "--token", chief)
        assert nothing.returncode == 2 and "nothing to correct" in nothing.stderr
        gone = await flashwire(stack, "lines", "--server", "http://127.0.0.1:1", "--token", chief)
        assert gone.returncode == 1 and "cannot reach http://127.0.0.1:1" in gone.stderr
        assert (await _line(node, chief, line["id"]))["status"] == "usable", "nothing was retracted"
    finally:
        await reader.ws.close()


async def test_url_is_refused_where_it_was_ambiguous_and_deprecated_on_listen(stack: Stack) -> None:
    """`post --url https://example.com/story` (the story link, in the API's words) is a usage error
    naming --server and --link, and sends nothing; `listen --url` still names the server, with a
    warning to use --server."""
    node, chief, reader = await _started(stack)
    try:
        refused = await flashwire(
            stack, "post", "--url", "https://example.com/story", "--token", chief, "Text"
        )
        assert refused.returncode == 2
        assert "--url is no longer accepted" in refused.stderr
        assert "--server URL" in refused.stderr and "--link URL" in refused.stderr
        listen = await asyncio.create_subprocess_exec(
            FLASHWIRE, "listen", "--url", node.url, "--editions", "en", "--count", "1",
            env=stack.env, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        try:
            assert listen.stdout is not None
            snapshot = (await asyncio.wait_for(listen.stdout.readline(), 30)).decode()
            assert "snapshot: 0 live lines" in snapshot, "nothing was posted by the refused command"
            async with httpx.AsyncClient(base_url=node.url) as api:
                await post_line(api, chief, "Heard")
            out_bytes, err_bytes = await asyncio.wait_for(listen.communicate(), 30)
            out, err = out_bytes.decode(), err_bytes.decode()
        finally:
            if listen.returncode is None:
                listen.kill()
                await listen.wait()
        assert "Heard" in out and listen.returncode == 0
        assert "flashwire: --url is deprecated; use --server (or FLASHWIRE_URL)" in err
    finally:
        await reader.ws.close()


async def _stderr_until(path: Path, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        said = await asyncio.to_thread(path.read_text)
        found = re.search(pattern, said)
        if found:
            return found
        assert time.monotonic() < deadline, said
        await asyncio.sleep(0.05)


async def test_listen_says_when_the_connection_is_lost_and_back_with_its_cursors(
    stack: Stack, tmp_path: Path
) -> None:
    """Across a restart of its service node `listen` says on stderr that the connection is lost and
    when it retries, then that it is back and the cursors it resumed from (those of the last event
    it printed); events keep coming on stdout."""
    stack.worker()
    node = stack.service()
    chief = await stack.token("chief", ["en"])
    errors = tmp_path / "listen.err"
    with errors.open("wb") as err:
        listen = await asyncio.create_subprocess_exec(
            FLASHWIRE, "listen", "--server", node.url, "--editions", "en", "--json",
            env=stack.env, stdout=PIPE, stderr=err,
        )  # fmt: skip
    assert listen.stdout is not None

    async def message() -> dict[str, Any]:
        assert listen.stdout is not None
        parsed: dict[str, Any] = json.loads(await asyncio.wait_for(listen.stdout.readline(), 30))
        return parsed

    try:
        assert (await message())["type"] == "snapshot"
        async with httpx.AsyncClient(base_url=node.url) as api:
            await post_line(api, chief, "Before the restart")
        event = await message()
        assert event["line"]["text"] == "Before the restart"
        await asyncio.to_thread(node.restart)
        await _stderr_until(errors, r"flashwire: connection lost \(.+\); reconnecting in \d+\.\d s")
        back = await _stderr_until(
            errors, r"flashwire: connection back; resumed from the last cursors \((.*)\)"
        )
        assert back[1] == f"en:{event['cursor']}"
        async with httpx.AsyncClient(base_url=node.url) as api:
            await post_line(api, chief, "After the restart")
        while (after := await message())["type"] != "line":
            assert after["type"] == "snapshot", after
        assert after["line"]["text"] == "After the restart"
    finally:
        if listen.returncode is None:
            listen.kill()
            await listen.wait()


async def test_if_revision_guards_a_change_and_a_conflict_says_what_is_current(stack: Stack) -> None:
    """`--if-revision N` sends If-Match: a change made against an older revision is refused 412 and
    printed with the revision and text now current, and nothing changes; at the current revision
    it is taken."""
    node, chief, reader = await _started(stack)
    try:
        common = ("--server", node.url, "--token", chief)
        async with httpx.AsyncClient(base_url=node.url) as api:
            line = await post_line(api, chief, "Quake hits Chile")
        await reader.events(1)
        assert (await flashwire(stack, "pin", line["id"], *common)).returncode == 0
        await reader.events(1)
        stale = await flashwire(
            stack, "correct", line["id"], *common, "--if-revision", "1", "Quake hits Peru"
        )
        assert stale.returncode == 1
        assert "flashwire: refused (412 precondition_failed, field If-Match): " in stale.stderr, stale.stderr
        assert "  revision: 2\n" in stale.stderr and "  text now: Quake hits Chile\n" in stale.stderr
        assert "flashwire: not changed: the line is no longer at --if-revision 1" in stale.stderr
        assert (await _line(node, chief, line["id"]))["text"] == "Quake hits Chile"
        current = await flashwire(
            stack, "correct", line["id"], *common, "--if-revision", "2", "Quake hits Peru"
        )
        assert current.returncode == 0, current.stderr
        [event] = await reader.events(1)
        assert event["line"]["text"] == "Quake hits Peru"
        bad = await flashwire(stack, "unpin", line["id"], *common, "--if-revision", "0")
        assert bad.returncode == 2 and "--if-revision: must be a whole number from 1" in bad.stderr
    finally:
        await reader.ws.close()


async def test_lines_into_a_pipe_closed_early_ends_quietly(stack: Stack) -> None:
    """`flashwire lines | head -1`: the reader of the pipe goes away after one line; the command
    ends without a traceback (a BrokenPipeError used to print one)."""
    node, chief, reader = await _started(stack)
    try:
        async with httpx.AsyncClient(base_url=node.url) as client:
            for i in range(200):
                await post_line(
                    client, chief, f"Line {i} of a busy night on the desk, long enough to fill pipes"
                )
        await stack.until_applied()
        command = f"{FLASHWIRE} lines --server {node.url} --token {chief} --edition en | head -1"
        piped = await asyncio.to_thread(
            subprocess.run, ["sh", "-c", command], env=stack.env, capture_output=True, text=True, timeout=60
        )
        assert piped.stdout.count("\n") == 1, piped.stdout
        assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    finally:
        await reader.ws.close()
