"""`make run`'s entry point and the CLI, driven as a newcomer would."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import RedisProcess
from tests.conftest import Stack

ROOT = Path(__file__).resolve().parent.parent
FLASHWIRE = str(Path(sys.executable).parent / "flashwire")


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_gone(pids: set[int], timeout_s: float) -> None:
    """Every one of `pids` has exited within `timeout_s`: no orphan left behind."""
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"orphans left behind: {[_describe(pid) for pid in left]}"


def _describe(pid: int) -> str:
    """What a process is and where it waits (its kernel wait channel), to tell why it did not exit."""
    proc = Path(f"/proc/{pid}")
    try:
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        wchan = (proc / "wchan").read_text()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError as exc:
        return f"{pid}: gone ({exc})"
    return f"{pid} [{state}, waiting in {wchan or '-'}]: {command}"


def _reap(dev: subprocess.Popen[str]) -> None:
    """Make sure the process (`flashwire dev`, a `listen`) is gone and its pipe closed, whatever the
    test did."""
    if dev.poll() is None:
        dev.kill()
        dev.wait()
    if dev.stdout is not None:
        dev.stdout.close()


def _start_dev(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(FLASHWIRE_DATA_DIR=str(tmp_path / "data"), FLASHWIRE_PORT=str(port), PYTHONUNBUFFERED="1")
    dev = subprocess.Popen(
        [FLASHWIRE, "dev"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return dev, env, port


def _read_until(dev: subprocess.Popen[str], marker: str, timeout_s: float = 60.0) -> str:
    """The output of a process (`flashwire dev`, `flashwire listen`) up to the line holding `marker`."""
    assert dev.stdout is not None
    output = ""
    deadline = time.monotonic() + timeout_s
    while marker not in output:
        assert time.monotonic() < deadline, output
        line = dev.stdout.readline()
        assert line, f"the process exited early:\n{output}"
        output += line
    return output


def _fresh_shell_env() -> dict[str, str]:
    """The environment of a new terminal in which the virtualenv is not activated: no VIRTUAL_ENV,
    no Flashwire variables, and a PATH without the virtualenv's bin (nor this Python's)."""
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if p and p != venv_bin]
    return {"PATH": ":".join(path), "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8"}


@pytest.mark.slow
def test_dev_starts_embedded_redis_worker_service_and_stops_without_orphans(tmp_path: Path) -> None:
    """`flashwire dev` with no REDIS_URL runs everything; the commands its banner suggests work as
    printed from a new shell without the virtualenv: a line posted with the printed `post` reaches
    the printed `listen`; Ctrl-C stops every process it started."""
    dev, _, port = _start_dev(tmp_path)
    try:
        output = _read_until(dev, "Press Ctrl-C to stop.")
        assert "embedded Redis" in output
        token = re.search(r"editor token\s+(fwt_\S+)", output)
        assert token, output
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists() or (
            tmp_path / "data" / "redis" / "appendonlydir"
        ).exists()
        children = _descendants(dev.pid)
        assert len(children) >= 3, "redis-server, worker and service"
        suggested = output.split("no need to activate the virtualenv):\n", 1)[1].splitlines()
        post_command, listen_command = (line.strip() for line in suggested[:2])
        assert " post --server " in post_command and " listen --server " in listen_command, suggested
        assert f"http://127.0.0.1:{port} " in post_command, "the service's address, not the default"
        shell = _fresh_shell_env()
        assert subprocess.run(["sh", "-c", "command -v flashwire"], env=shell).returncode != 0
        listen = subprocess.Popen(
            ["sh", "-c", f"{listen_command} --count 1"],
            env=shell,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # `listen` prints the snapshot once it is subscribed: from then on a post reaches it.
            listened = _read_until(listen, "snapshot", timeout_s=30)
            posted = subprocess.run(
                ["sh", "-c", post_command],
                env=shell,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert posted.returncode == 0, posted.stderr
            assert posted.stdout.startswith("posted en-")
            rest_of_listen, _ = listen.communicate(timeout=30)
            listened += rest_of_listen
        finally:
            _reap(listen)
        assert listen.returncode == 0, listened
        assert "FLASH" in listened and "Your first breaking line" in listened
        dev.send_signal(signal.SIGINT)
        rest, _ = dev.communicate(timeout=30)
        assert "stopped." in rest
        assert dev.returncode == 0
        _assert_gone(children, timeout_s=5)
    finally:
        _reap(dev)


@pytest.mark.slow
def test_dev_renames_its_embedded_redis_data_of_the_old_key_layout(tmp_path: Path) -> None:
    """Data kept by a version before the hash-tagged layout (`fw:lines`, `fw:epoch`) is renamed by
    `flashwire dev` itself, before its worker and service start (they would refuse to run beside it)."""
    old = RedisProcess(tmp_path / "data" / "redis").start()
    try:
        client = SyncRedis(port=old.port)
        client.hset("fw:lines", "en-1", "en")
        client.set("fw:epoch", "e1")
        client.close()
    finally:
        old.stop()
    dev, _, _ = _start_dev(tmp_path)
    try:
        output = _read_until(dev, "Press Ctrl-C to stop.")
        assert "renamed 2 key(s) of the embedded Redis to the hash-tagged layout" in output
        dev.send_signal(signal.SIGINT)
        dev.communicate(timeout=30)
    finally:
        _reap(dev)


@pytest.mark.slow
def test_dev_killed_outright_leaves_no_orphans(tmp_path: Path) -> None:
    """Even a SIGKILLed `flashwire dev` takes its Redis, worker and service down with it."""
    dev, _, _ = _start_dev(tmp_path)
    try:
        _read_until(dev, "Press Ctrl-C to stop.")
        children = _descendants(dev.pid)
        assert len(children) >= 3
        dev.kill()
        dev.wait()
        _assert_gone(children, timeout_s=15)
    finally:
        _reap(dev)


async def test_token_commands_create_list_and_revoke(stack: Stack) -> None:
    """`flashwire token create|list|revoke` manage tokens the API then honours."""
    env = {**stack.env}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLASHWIRE, "token", *args], env=env, capture_output=True, text=True, timeout=30
        )

    created = await asyncio.to_thread(
        run, "create", "--name", "Rania", "--role", "chief", "--editions", "ar,en"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("fwt_")
    token_id = secret.split("_")[1]
    listed = await asyncio.to_thread(run, "list")
    assert token_id in listed.stdout and "Rania" in listed.stdout and "active" in listed.stdout
    assert secret.split("_", 2)[2] not in listed.stdout, "the secret is never listed"
    bad = await asyncio.to_thread(run, "create", "--name", "X", "--editions", "fr")
    assert bad.returncode == 2 and "unknown edition" in bad.stderr
    node = stack.service()
    import httpx

    async with httpx.AsyncClient(base_url=node.url) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        response = await client.get("/api/v1/editions/ar/lines", headers=headers)
        assert response.status_code == 200
        revoked = await asyncio.to_thread(run, "revoke", token_id)
        assert revoked.returncode == 0
        response = await client.get("/api/v1/editions/ar/lines", headers=headers)
        assert response.status_code == 401
    assert "revoked" in (await asyncio.to_thread(run, "list")).stdout
