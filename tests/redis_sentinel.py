"""A replicated Redis for tests: a primary, replicas and (optionally) three sentinels on free ports.

Every process is the redis-server that `flashwire.dev.redis_server.redis_server_binary()` names
(Valkey 8.1 by default: docs/architecture.md, "The Redis we test on"), a sentinel being the same
binary with `--sentinel` and a config file of its own (a sentinel rewrites it). Nothing listens
on 6379. The sentinels are quick on purpose: a primary is "down" after DOWN_AFTER_MS without an
answer, so a failover completes in about two seconds instead of the thirty of Redis's defaults.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import redis_server_binary

MASTER_NAME = "flashwire"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _command(port: int, *words: str, timeout_s: float = 1.0) -> bytes:
    """Send one inline command and return the raw reply (for set-up; tests use redis-py)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        return sock.recv(65536)


class ServerProcess:
    """One redis-server (data node or sentinel) on 127.0.0.1:`port`."""

    def __init__(self, args: list[str], port: int, folder: Path) -> None:
        self.args = args
        self.port = port
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> ServerProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, cwd=self.folder)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if _command(self.port, "PING", timeout_s=0.2).startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} did not start:\n{log}")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the machine is gone, with whatever it had not sent its replicas."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: a clean shutdown (the append-only file flushed), as for a restart."""
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            self.process.wait(timeout_s)

    def freeze(self) -> None:
        """SIGSTOP: the process holds its connections but answers nothing (a stalled machine)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command(self, *words: str) -> bytes:
        return _command(self.port, *words)


def data_node(folder: Path, *, replica_of: int | None = None, port: int | None = None) -> ServerProcess:
    """A data node (not started), with append-only persistence, optionally a replica of `replica_of`."""
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--daemonize", "no", "--logfile", str(folder / "redis.log"),
        # A replica resyncs from the replication backlog after a short break instead of a full copy.
        "--repl-backlog-size", "16mb",
    ]  # fmt: skip
    if replica_of is not None:
        # A replica that lost its primary, or is still loading or syncing after a restart, refuses
        # reads (MASTERDOWN) rather than serve a history older than one a node has already read
        # (docs/operations.md "Reading from replicas").
        args += ["--replicaof", "127.0.0.1", str(replica_of), "--replica-serve-stale-data", "no"]
    return ServerProcess(args, port, folder)


def sentinel_node(folder: Path, primary_port: int, quorum: int = 2) -> ServerProcess:
    """A sentinel (not started) watching the primary on `primary_port` as MASTER_NAME."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'redis.log'}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
    return ServerProcess([redis_server_binary(), str(config), "--sentinel"], port, folder)


class Replicated:
    """A primary and `replicas` replicas, and with `sentinels` three sentinels watching them."""

    def __init__(self, folder: Path, *, replicas: int = 1, sentinels: bool = True) -> None:
        self.primary = data_node(folder / "primary").start()
        self.replicas = [
            data_node(folder / f"replica-{i}", replica_of=self.primary.port).start() for i in range(replicas)
        ]
        self.wait_replicated()
        self.sentinels = (
            [sentinel_node(folder / f"sentinel-{i}", self.primary.port).start() for i in range(3)]
            if sentinels
            else []
        )
        if sentinels:
            self.wait_sentinels_ready()

    @property
    def data_nodes(self) -> list[ServerProcess]:
        return [self.primary, *self.replicas]

    def env(self) -> dict[str, str]:
        """What a Flashwire process needs to reach this Redis through the sentinels."""
        return {
            "FLASHWIRE_REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "FLASHWIRE_REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def wait_replicated(self, timeout_s: float = 10.0) -> None:
        """Until every replica reports its link to the primary up."""
        deadline = time.monotonic() + timeout_s
        while any(b"master_link_status:up" not in r.command("INFO", "replication") for r in self.replicas):
            if time.monotonic() > deadline:
                raise RuntimeError("replicas did not sync with the primary")
            time.sleep(0.05)

    def wait_sentinels_ready(self, timeout_s: float = 10.0) -> None:
        """Until every sentinel knows the replicas and the other sentinels (a failover needs both)."""
        deadline = time.monotonic() + timeout_s
        want = (f"slaves={len(self.replicas)}", f"sentinels={len(self.sentinels)}")
        while True:
            infos = [s.command("INFO", "sentinel").decode() for s in self.sentinels]
            if all(all(w in info for w in want) for info in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sentinels not ready: {infos}")
            time.sleep(0.05)

    def master_port(self) -> int:
        """The primary's port as the first sentinel reports it."""
        reply = self.sentinels[0].command("SENTINEL", "get-master-addr-by-name", MASTER_NAME).decode()
        return int(reply.split("\r\n")[4])

    def close(self) -> None:
        for process in [*self.sentinels, *self.data_nodes]:
            process.kill()
