"""`flashwire serve --workers N`: several processes on one port (service/processes.py).

Real `flashwire serve --workers 2` processes against a real redis-server: each process is a node
of its own name with its own hub; a process that dies is replaced; the node's processes stop
with their supervisor, even when it is SIGKILLed; the connection caps hold per process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import psutil
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from flashwire.dev.ports import free_port
from tests.conftest import Reader, ServiceNode, Stack, close_promptly, eventually, open_reader


def start_node(stack: Stack, workers: int, **env: str) -> ServiceNode:
    """A `flashwire serve --workers N` node of the test's stack (stopped at teardown)."""
    index = len(stack.processes)
    node = ServiceNode({**stack.env, **env}, stack.tmp_path / f"service-{index}.log", free_port())
    node.args += ["--workers", str(workers)]
    node.start()
    stack.processes.append(node)
    node.wait_ready()
    # /healthz answered by one process says nothing of the others: wait until every process
    # publishes its readers-online count, which it starts doing just before it accepts.
    client = redis.Redis.from_url(stack.redis_server.url)
    try:
        deadline = time.monotonic() + 20
        while len(published(client, stack)) < workers:
            assert time.monotonic() < deadline, f"not all {workers} processes started:\n{node.log()}"
            time.sleep(0.05)
    finally:
        client.close()
    return node


def published(client: redis.Redis, stack: Stack) -> set[str]:
    """The node names whose readers-online counts are in Redis now (service/reach.py)."""
    names = [name.decode() for name in client.zrange(stack.keys.readers_nodes, 0, -1)]
    return {name for name in names if client.exists(stack.keys.readers(name))}


def serving_processes(node: ServiceNode) -> list[psutil.Process]:
    """The node's serving processes (not multiprocessing's resource tracker)."""
    serving = []
    for child in psutil.Process(node.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                serving.append(child)
        except psutil.Error:
            continue  # gone (or a zombie) between the listing and the look
    return serving


def node_names(node: ServiceNode, tries: int = 40) -> set[str]:
    """The node names /healthz reports over fresh connections (each one is accepted by a process)."""
    names = set()
    for _ in range(tries):
        names.add(httpx.get(f"{node.url}/healthz", headers={"Connection": "close"}, timeout=5).json()["node"])
    return names


async def test_each_process_is_a_node_of_its_own(stack: Stack) -> None:
    """Two processes answer on one port under distinct names, `<node>.<pid>`, and each publishes
    its own readers-online count: the API sums both processes' readers."""
    node = start_node(stack, 2)
    processes = serving_processes(node)
    assert len(processes) == 2
    names = node_names(node)
    assert {name.rsplit(".", 1)[1] for name in names} == {str(p.pid) for p in processes}, names
    assert {name.rsplit(".", 1)[0] for name in names} == {f"{os.uname().nodename}-{node.pid}"}
    client = redis.Redis.from_url(stack.redis_server.url)
    assert published(client, stack) == names
    client.close()
    readers: list[Reader] = []
    try:
        seen: dict[str, int] = {}
        while len(seen) < 2 or min(seen.values()) < 2:
            reader = await open_reader(node.ws_url, "editions=en")
            readers.append(reader)
            name = reader.messages[0]["node"]
            seen[name] = seen.get(name, 0) + 1
            assert len(readers) < 60, f"60 readers, all on one process: {seen}"
        token = await stack.token()

        async def online() -> dict[str, object] | None:
            async with httpx.AsyncClient() as client:
                answer = await client.get(
                    f"{node.url}/api/v1/editions/en/readers", headers={"Authorization": f"Bearer {token}"}
                )
            body: dict[str, object] = answer.json()
            return body if body.get("readers") == len(readers) and body.get("nodes") == 2 else None

        await eventually(online, timeout_s=8)
    finally:
        await close_promptly(readers)


@pytest.mark.slow
async def test_a_dead_process_is_replaced_and_a_dead_supervisor_takes_its_processes(stack: Stack) -> None:
    """SIGKILL one process: the supervisor starts another (a new name) and the port keeps serving.
    SIGKILL the supervisor: its processes stop too (PR_SET_PDEATHSIG), leaving the port free."""
    node = start_node(stack, 2)
    first = serving_processes(node)
    first[0].kill()

    async def replaced() -> list[psutil.Process] | None:
        now = serving_processes(node)
        return now if len(now) == 2 and first[0].pid not in {p.pid for p in now} else None

    now = await eventually(replaced, timeout_s=15)
    newcomer = next(p for p in now if p.pid != first[1].pid)
    assert await eventually(lambda: _has(node, f".{newcomer.pid}"), timeout_s=15)
    node.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    node.process.wait()  # type: ignore[union-attr]
    _gone, alive = psutil.wait_procs(now, timeout=10)
    for orphan in alive:
        orphan.kill()  # ours: started by this test's node
    assert alive == [], f"processes outlived their supervisor: {alive}"


async def _has(node: ServiceNode, suffix: str) -> bool | None:
    return True if any(name.endswith(suffix) for name in node_names(node, 20)) else None


async def test_sigterm_stops_every_process_gracefully(stack: Stack) -> None:
    """SIGTERM to the supervisor: every process closes its readers (1012, service restart) and
    exits, then the supervisor exits 0."""
    node = start_node(stack, 2)
    processes = serving_processes(node)
    readers = [await open_reader(node.ws_url, "editions=en") for _ in range(10)]
    assert len({reader.messages[0]["node"] for reader in readers}) == 2
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    codes = await asyncio.gather(*(reader.until_closed(timeout_s=10) for reader in readers))
    assert node.process.wait(15) == 0  # type: ignore[union-attr]
    assert psutil.wait_procs(processes, timeout=5)[1] == []
    assert set(codes) == {1012}, codes
    assert time.monotonic() - started < 10


async def test_caps_hold_per_process(stack: Stack) -> None:
    """FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT counts per process (docs/operations.md): with a cap of
    5 and two processes, one address holds at most 5 readers on each, 10 on the node; each one
    beyond it is refused with 1013 and the reason naming the limit."""
    node = start_node(stack, 2, FLASHWIRE_MAX_CONNECTIONS_PER_CLIENT="5")
    held: list[Reader] = []
    refused: list[tuple[int | None, str]] = []
    try:
        for _ in range(40):
            ws = await connect(
                f"{node.ws_url}?editions=en", compression=None, ping_interval=None, max_queue=None
            )
            reader = Reader(ws)
            try:
                message = await reader.next()
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                refused.append((closed.rcvd.code, closed.rcvd.reason))
                continue
            assert message["type"] == "hello"
            held.append(reader)
        per_process: dict[str, int] = {}
        for reader in held:
            per_process[reader.messages[0]["node"]] = per_process.get(reader.messages[0]["node"], 0) + 1
        assert max(per_process.values()) <= 5, per_process
        assert len(held) + len(refused) == 40
        assert {code for code, _ in refused} == {1013}
        assert all("at most 5" in reason for _, reason in refused)
        # Both processes took readers of the address: the node holds more than one cap's worth.
        # (Not necessarily 5 each: the kernel gives a connection to whichever process is waiting in
        # accept(), and a process can be refusing when the other would have taken one.)
        assert len(per_process) == 2 and len(held) > 5, per_process
    finally:
        await close_promptly(held)


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_worker_counts_are_refused(stack: Stack, value: str) -> None:
    """--workers and FLASHWIRE_SERVE_WORKERS take a whole number from 1: anything else is a usage
    error (exit 2) that names the value."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    by_option = subprocess.run(
        [sys.executable, "-m", "flashwire.cli", "serve", "--workers", value],
        env=stack.env, capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert by_option.returncode == 2 and repr(value) in by_option.stderr, by_option.stderr
    by_setting = subprocess.run(
        [sys.executable, "-m", "flashwire.cli", "serve"],
        env={**stack.env, "FLASHWIRE_SERVE_WORKERS": value},
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert by_setting.returncode == 2 and "FLASHWIRE_SERVE_WORKERS" in by_setting.stderr, by_setting.stderr


@pytest.mark.slow
async def test_sighup_replaces_every_process_while_the_port_keeps_answering(stack: Stack) -> None:
    """SIGHUP: uvicorn replaces the processes one at a time, each new one ready before the old
    one stops, so the node answers throughout; the new processes publish under new names."""
    node = start_node(stack, 2)
    before = {process.pid for process in serving_processes(node)}
    node.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    failures: list[str] = []
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                answer = await client.get(f"{node.url}/healthz", headers={"Connection": "close"})
                if answer.status_code != 200:
                    failures.append(f"status {answer.status_code}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            now = {process.pid for process in serving_processes(node)}
            if len(now) == 2 and not now & before:
                break
            assert time.monotonic() < deadline, f"not replaced: {before} -> {now}"
            await asyncio.sleep(0.02)
    assert failures == []
    client_ = redis.Redis.from_url(stack.redis_server.url)
    try:
        assert await eventually(
            lambda: _async(
                {name.rsplit(".", 1)[1] for name in published(client_, stack)} >= {str(p) for p in now}
            ),
            timeout_s=5,
        )
    finally:
        client_.close()


async def _async(value: bool) -> bool | None:
    return value or None
