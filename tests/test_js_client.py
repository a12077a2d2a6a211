"""The JavaScript client (web/client/flashwire.js) runs its own tests with Node's test runner
against a real stack: this test starts redis, a worker and a service node, and runs
`node --test web/client/test/` with the node's URL and two tokens in the environment
(FLASHWIRE_URL, FLASHWIRE_TOKEN: an editor's, FLASHWIRE_CHIEF_TOKEN: a chief's, for kills).
Then: the same module in Chromium, imported by a page of another origin from the node, over
WebSocket and SSE; and the fault run with the client as 60 of its readers (must-show 5).

The Node tests need web/client/node_modules (`npm ci` there; `make test` does it): `ws` for
WebSocket on Node < 22 and for the scripted servers, and TypeScript for the declarations' check.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.browser import browser
from tests.conftest import ROOT, Stack, post_line
from tests.fault_run import RunConfig, run_fault_model
from tests.partner import PartnerSite

CLIENT = ROOT / "web" / "client"
EDITIONS = ["en", "ar", "es"]


def node_binary() -> str:
    """Node.js (18 or later) and the client's dev dependencies, or a failure saying how to get them."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: `make test` installs Debian's nodejs")
    if not (CLIENT / "node_modules" / "ws").is_dir():
        pytest.fail("web/client/node_modules is missing: run `npm ci` in web/client (`make test` does)")
    return node


async def run_node_tests(node: str, env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """`node --test web/client/test/*.test.mjs` with `env`; its exit status and output (TAP). The
    files are listed here: Node 18 and 20 take a directory, 22 takes globs."""
    files = sorted(str(path.relative_to(CLIENT)) for path in (CLIENT / "test").glob("*.test.mjs"))
    process = await asyncio.create_subprocess_exec(
        node,
        "--test",
        "--test-reporter=tap",
        *files,
        cwd=CLIENT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, output.decode(errors="replace") + f"\n(node --test did not finish within {timeout_s} s)"
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_js_client_passes_its_node_tests_against_a_real_stack(stack: Stack) -> None:
    """Every test of web/client/test/ passes (none skipped): the scripted ones (backoff, close
    codes, cursor check, types) and those against this stack's node."""
    node = node_binary()
    stack.worker()
    service = stack.service()
    env = {
        **os.environ,
        "FLASHWIRE_URL": service.url,
        "FLASHWIRE_TOKEN": await stack.token("editor", EDITIONS),
        "FLASHWIRE_CHIEF_TOKEN": await stack.token("chief", EDITIONS, name="Chief"),
    }
    status, output = await run_node_tests(node, env, timeout_s=200)
    assert status == 0, output
    assert "# fail 0" in output and "# skipped 0" in output, output
    # A skipped suite is not counted as skipped: the real server's suite ran.
    assert "# SKIP" not in output and re.search(r"^ok \d+ - against a real server$", output, re.M), output


# A partner page's module script: one client per transport, each recording its states and lines.
BROWSER_PAGE = """<!doctype html><meta charset="utf-8"><title>app</title>
<script type="module">
import { FlashwireClient } from "%(node)s/web/client/flashwire.js";
window.__got = { ws: [], sse: [] };
window.__states = { ws: [], sse: [] };
for (const transport of ["ws", "sse"]) {
  const client = new FlashwireClient({ server: "%(node)s", editions: ["en"], transport });
  client.on("state", ({ state }) => window.__states[transport].push(state));
  client.on("line", ({ line }) => window.__got[transport].push(line.text));
  client.start();
}
</script>"""


@pytest.mark.slow
async def test_js_client_works_in_chromium_imported_from_another_origin(
    stack: Stack, partner: PartnerSite
) -> None:
    """A page of another origin imports the module from the node (CORS) and follows the ticker over
    WebSocket and over SSE (read with fetch streaming): both go live and show a line posted then."""
    stack.worker()
    node = stack.service()
    editor = await stack.token("editor", ["en"])
    (partner.root / "app.html").write_text(BROWSER_PAGE % {"node": node.url})
    async with browser() as chromium:
        page = await chromium.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{partner.origin}/app.html")
        await page.wait_for_function(
            "window.__states.ws.includes('live') && window.__states.sse.includes('live')"
        )
        async with httpx.AsyncClient(base_url=node.url) as api:
            await post_line(api, editor, "seen in the browser")
        await page.wait_for_function("window.__got.ws.length > 0 && window.__got.sse.length > 0")
        got = await page.evaluate("window.__got")
        assert got == {"ws": ["seen in the browser"], "sse": ["seen in the browser"]}, got
        assert errors == []
        await page.close()


# The fault run of tests/test_delivery_model.py (3 nodes, 2 workers, 4 editors; a node, a worker and
# Redis SIGKILLed at 15, 40 and 60 % of 14 s of editing, where the model's own run edits for 20 s),
# with 60 of its readers being the JavaScript client (a third on SSE only) beside 40 of the
# harness's own (30 WebSocket, 10 SSE), so that a failure of the server shows in both kinds and one
# of the client only in its own.
EDIT_S = 14.0
FAULTS = ((0.15, "node"), (0.4, "worker"), (0.6, "redis"))


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
@pytest.mark.timeout(240)
async def test_js_client_resumes_under_faults_without_gap_or_duplicate(tmp_path: Path) -> None:
    """Must-show 5: the JavaScript client passes the resume-under-faults run the Python readers
    pass: every client got exactly its events (tests/delivery_model.py), in order, over every
    reconnection it decided on itself, no client stopped, and the lines each holds at the end are
    the model's live lines for its filter at its cursor. FLASHWIRE_MODEL_SEED=<n> replays a seed."""
    node_binary()
    seed = int(os.environ.get("FLASHWIRE_MODEL_SEED") or random.SystemRandom().randrange(1, 10**9))
    print(f"FLASHWIRE_MODEL_SEED={seed}")
    config = RunConfig(
        seed=seed,
        work_dir=tmp_path,
        edit_s=EDIT_S,
        faults=FAULTS,
        ws_readers=30,
        sse_readers=10,
        js_readers=60,
    )
    outcome = await run_fault_model(config)
    print(outcome.summary())
    assert outcome.ok and outcome.fault_kinds() == {"node", "worker", "redis"}, outcome.failure_text()
    assert outcome.report is not None and outcome.report.reset_snapshots == 0
    js = [record for record in outcome.records if record.transport.startswith("js-")]
    assert len(js) == 60
    # The faults reached the clients: over each transport, some resumed with their cursors.
    resumed = {c.transport for record in js for c in record.connections[1:] if c.resume}
    assert resumed == {"ws", "sse"}, outcome.summary()
    # Nothing blocks WebSocket here: no fault made a default client take a failure for a blocked
    # WebSocket and fall back to SSE.
    fallbacks = [
        r.name for r in js if r.transport == "js-auto" and any(c.transport != "ws" for c in r.connections)
    ]
    assert not fallbacks, fallbacks
    print(f"JavaScript clients: {sum(len(r.connections) for r in js)} connections; {resumed}")
