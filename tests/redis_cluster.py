"""A real 3-primary Redis Cluster for tests: three cluster-enabled redis-servers (the embedded
binary, `--cluster-enabled yes`) on free ports, joined with the cli beside it
(`--cluster create ... --cluster-replicas 0 --cluster-yes`).

Each node also listens on its cluster bus port, port + 10000, so a port is taken only when that
one is free too. The 16384 slots are split in three ranges; Flashwire's `{fw}` tag hashes to one
of them and untagged keys spread over all three, so a command or script whose keys are not in one
slot fails here with CROSSSLOT, as on any Cluster.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from redis import Redis as SyncRedis

from flashwire.dev.ports import bindable, free_port
from flashwire.dev.redis_server import _ping, redis_cli_binary, redis_server_binary

BUS_PORT_OFFSET = 10_000
NODES = 3
START_TIMEOUT_S = 20.0


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + BUS_PORT_OFFSET < 65536 and bindable(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("no port found with a free cluster bus port")


class RedisCluster3:
    """Three cluster-enabled redis-server processes on 127.0.0.1, joined into one Cluster."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = [cluster_port() for _ in range(NODES)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A seed node's URL (REDIS_URL with FLASHWIRE_REDIS_CLUSTER=true)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisCluster3:
        for port in self.ports:
            node_dir = self.data_dir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [
                redis_server_binary(),
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)),
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no"),
                *("--daemonize", "no", "--logfile", str(node_dir / "redis.log")),
            ]
            self.processes.append(subprocess.Popen(args, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in self.ports:
            while not _ping(port):
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"cluster node on {port} did not answer; see {self.data_dir}")
                time.sleep(0.02)
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        self._wait_ok(deadline)
        return self

    def _wait_ok(self, deadline: float) -> None:
        """Until every node reports `cluster_state:ok` (the slots are assigned and gossiped)."""
        for port in self.ports:
            client = SyncRedis(port=port)
            try:
                while client.cluster("INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node on {port} never reached cluster_state:ok")
                    time.sleep(0.05)
            finally:
                client.close()

    def flush(self) -> None:
        """Empty every node (FLUSHALL on each primary), for the next test."""
        for port in self.ports:
            client = SyncRedis(port=port)
            try:
                client.flushall()
            finally:
                client.close()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
