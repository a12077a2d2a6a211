"""Choosing a TCP port for a private server (redis-server, a service node) on 127.0.0.1.

The usual trick, bind to port 0 and close, hands out a port from the kernel's
ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 on Linux). That is
the range the kernel also draws from for the local side of every *outgoing*
connection, so between choosing the port and the server binding it, any client
socket on the machine may take it and the server fails with EADDRINUSE. With
thousands of test connections a second that happened in CI. Ports below the
ephemeral range are never given to outgoing connections, so a port chosen
there stays free unless another server binds it on purpose.

Parallel test processes (pytest-xdist) each get their own slice of that range,
so two of them never choose the same port at the same moment.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST_PORT = 20_000
"""Below this are well-known services (6379, 8000, 8080 ...) that a machine may run."""

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32_768
"""The Linux default lower bound, used where the kernel setting cannot be read."""

_given: set[int] = set()


def ephemeral_low() -> int:
    """The lowest port the kernel gives to outgoing connections on this machine."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return DEFAULT_EPHEMERAL_LOW


def port_slice() -> range:
    """The ports this process may choose from: its own share of [LOWEST_PORT, ephemeral low).

    Under pytest-xdist, worker `gwN` of `PYTEST_XDIST_WORKER_COUNT` takes the
    N-th of that many equal slices; any other process takes the whole range.
    """
    low, high = LOWEST_PORT, max(ephemeral_low(), LOWEST_PORT + 1_000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        size = (high - low) // count
        start = low + int(worker[2:]) % count * size
        return range(start, start + size)
    return range(low, high)


def bindable(port: int) -> bool:
    """Whether a socket can bind `port` on 127.0.0.1 now (nothing listens there, nothing holds it)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and no outgoing connection will take.

    Chosen at random from `port_slice()`, never the same twice in one process
    (a server just stopped may leave its port in TIME_WAIT).

    Raises:
        RuntimeError: after 200 tries found every chosen port busy.
    """
    ports = port_slice()
    for _ in range(200):
        port = random.choice(ports)
        if port not in _given and bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port found in {ports.start}-{ports.stop - 1}")
