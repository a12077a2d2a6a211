"""The JavaScript client (web/client/flashwire.js) runs its own tests with Node's test runner
against a real stack: this test starts redis, a worker and a service node, and runs
`node --test web/client/test/` with the node's URL and two tokens in the environment
(FLASHWIRE_URL, FLASHWIRE_TOKEN: an editor's, FLASHWIRE_CHIEF_TOKEN: a chief's, for kills).

The Node tests need web/client/node_modules (`npm ci` there; `make test` does it): `ws` for
WebSocket on Node < 22 and for the scripted servers, and TypeScript for the declarations' check.
"""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from tests.conftest import ROOT, Stack

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
