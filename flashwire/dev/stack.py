"""`flashwire dev`: the whole system in one command for a laptop.

Starts an embedded redis-server (when REDIS_URL is unset) with its data under
a project-local folder (where it also keeps a VAPID key pair for Web Push),
then the worker and one service node, prints the URLs and an editor token,
and stops all of them cleanly on Ctrl-C. Children are started with a
parent-death signal, so even a killed `flashwire dev` leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from redis.asyncio import Redis

from flashwire.core.key_layout import migrate_key_layout
from flashwire.core.keys import Keys
from flashwire.core.redis_connect import RedisConnector
from flashwire.core.settings import Settings
from flashwire.core.vapid import ensure_key_file
from flashwire.dev.redis_server import RedisProcess, die_with_parent
from flashwire.service.tokens import TokenStore

STOP_TIMEOUT_S = 10.0
# The contact dev's VAPID JWTs carry; a deployment sets its own (FLASHWIRE_VAPID_SUBJECT).
DEV_VAPID_SUBJECT = "mailto:newsroom@example.com"


def data_dir() -> Path:
    """Where dev keeps Redis data and the dev token: $FLASHWIRE_DATA_DIR or ./.flashwire."""
    return Path(os.environ.get("FLASHWIRE_DATA_DIR") or ".flashwire").resolve()


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


async def _dev_token(settings: Settings, folder: Path) -> str:
    """Reuse the dev token kept in `folder` if Redis still knows it; else make a new one."""
    path = folder / "dev-token"
    connector = RedisConnector(settings)
    redis = connector.primary(Redis)
    try:
        store = TokenStore(redis, Keys(settings.key_prefix))
        if path.exists():
            existing = path.read_text().strip()
            if await store.authenticate(existing) is not None:
                return existing
        token, _ = await store.create(name="dev-editor", role="chief", editions=["*"])
        path.write_text(token + "\n")
        path.chmod(0o600)
        return token
    finally:
        await connector.aclose()


async def _migrate_embedded(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        done = await migrate_key_layout(redis, Keys(settings.key_prefix))
    finally:
        await redis.aclose()
    if done.renamed:
        print(f"renamed {done.renamed} key(s) of the embedded Redis to the hash-tagged layout", flush=True)


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the service did not answer {url} within {timeout_s:.0f}s")


def try_commands(base: str, folder: Path) -> list[str]:
    """The commands the banner suggests, runnable as printed from a new shell in this folder.

    The virtualenv's `flashwire` is named by its path (it is on PATH only once the virtualenv is
    activated; relative when it is under this folder, as `.venv/bin/flashwire` is for `make run`);
    `--server` is given when the service is not at the CLI's default address, and
    FLASHWIRE_DATA_DIR when the CLI would not find the dev token in ./.flashwire by itself.
    """
    from flashwire.cli import DEFAULT_URL

    cwd = Path.cwd()
    script = Path(sys.executable).parent / "flashwire"
    if script.exists():
        program = [str(script.relative_to(cwd)) if script.is_relative_to(cwd) else str(script)]
    else:
        program = [sys.executable, "-m", "flashwire.cli"]
    prefix = (
        "" if folder == (cwd / ".flashwire").resolve() else f"FLASHWIRE_DATA_DIR={shlex.quote(str(folder))} "
    )
    server = [] if base == DEFAULT_URL else ["--server", base]
    post = [*program, "post", *server, "--edition", "en", "--urgency", "flash", "Your first breaking line"]
    listen = [*program, "listen", *server, "--editions", "en"]
    return [prefix + shlex.join(post), prefix + shlex.join(listen)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_dev() -> int:
    """Run Redis (embedded unless REDIS_URL is set), worker and service until Ctrl-C."""
    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    redis_process: RedisProcess | None = None
    if not env.get("REDIS_URL"):
        port = int(env.get("FLASHWIRE_REDIS_PORT") or 0) or None
        redis_process = RedisProcess(folder / "redis", port=port, tied_to_parent=True).start()
        env["REDIS_URL"] = redis_process.url
        print(f"embedded Redis   {redis_process.url}  (data in {folder / 'redis'})", flush=True)
    if not env.get("FLASHWIRE_VAPID_PRIVATE_KEY_FILE"):
        # Web Push on from the first start: a VAPID key pair kept with the dev data (docs/push.md).
        env["FLASHWIRE_VAPID_PRIVATE_KEY_FILE"] = str(ensure_key_file(folder / "vapid-private-key.pem"))
        env.setdefault("FLASHWIRE_VAPID_SUBJECT", DEV_VAPID_SUBJECT)
    settings = Settings.from_env(env)
    (folder / "redis-url").write_text(settings.redis_url + "\n")
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        if redis_process is not None:
            # The embedded Redis is dev's own: data kept from a version before the hash-tagged key
            # layout is renamed here, before the worker and service start (flashwire/core/key_layout.py).
            asyncio.run(_migrate_embedded(settings))
        token = asyncio.run(_dev_token(settings, folder))
        python = sys.executable
        children.append(_spawn([python, "-m", "flashwire.cli", "worker"], env))
        service = _spawn([python, "-m", "flashwire.cli", "serve"], env)
        children.append(service)
        base = f"http://{settings.host}:{settings.port}"
        _wait_http(f"{base}/healthz", service)
        print(
            f"\nFlashwire is running.\n"
            f"  demo page      {base}/\n"
            f"  newsroom desk  {base}/desk\n"
            f"  WebSocket      ws://{settings.host}:{settings.port}/ws\n"
            f"  API            {base}/api/v1/openapi.json\n"
            f"  editor token   {token}\n"
            f"                 (chief editor, all editions; kept in {folder / 'dev-token'})\n"
            f"Try it from another terminal in this folder (no need to activate the virtualenv):\n"
            + "".join(f"  {command}\n" for command in try_commands(base, folder))
            + "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(f"a child process exited with {child.returncode}; stopping", file=sys.stderr)
                    exit_code = 1
                    stopping = True
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"flashwire dev: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        for child in reversed(children):
            _stop(child)
        if redis_process is not None:
            redis_process.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        print("stopped.", flush=True)
    return exit_code
