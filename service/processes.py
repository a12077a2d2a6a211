"""A service node's processes: `flashwire serve --workers N` (FLASHWIRE_SERVE_WORKERS).

One Python process uses one core; a node with N processes uses N. The processes are uvicorn's
own supervisor (`uvicorn.supervisors.Multiprocess`), not a home-made one, because it already does
what a node needs, in the parent process:

- binds the port once and hands the listening socket to every process (spawned, not forked):
  the kernel gives each new connection to one of the processes waiting in accept();
- on SIGTERM or SIGINT sends SIGTERM to every process, each of which shuts down gracefully
  (readers get their close frames, `timeout_graceful_shutdown`), and waits for them;
- replaces a process that died (checked every 0.5 s) or stopped answering its health pipe for
  `timeout_worker_healthcheck` s; stops the whole node if one fails during start-up (exit code 3:
  the next would fail the same way); SIGHUP replaces the processes one by one.

What this module adds:

- **Each process builds its own node in the process** (`ProcessConfig.load`): its application,
  hub (one XREAD reader per process, as with one process) and protocol classes. The parent only
  holds picklable settings: an app object and our protocol classes cannot be sent to a spawned
  process.
- **A node name per process**, `<node>.<pid>`: reach and the readers-online count key by node
  name (service/reach.py). Processes sharing one name would overwrite each other's
  readers-online hash every second (the API would show one process's readers) and a process
  that stops would delete the hash of the others; reach would count the node's processes as one.
- **No orphans**: if the parent dies without stopping them (SIGKILL, OOM killer), the kernel
  sends each process SIGTERM (Linux PR_SET_PDEATHSIG, prctl(2)), so a node is never left with
  processes nobody supervises, holding the port that a new parent would then fail to bind.
  (The signal comes when the thread that started the process ends: uvicorn's supervisor starts
  and replaces processes from its main thread.)

Limits, health and metrics stay per process (docs/operations.md "Several processes per node").
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from flashwire.core.logs import configure_logging
from flashwire.core.settings import Settings
from flashwire.service.connection_log import silence_server_lines

log = logging.getLogger(__name__)

# prctl(2) option: the signal this process gets when its parent thread ends.
PR_SET_PDEATHSIG = 1


def server_config(settings: Settings, host: str, port: int, *, access_log: bool = True) -> uvicorn.Config:
    """uvicorn's configuration for one service process: the node's own HTTP protocol, which bounds
    sockets, request heads and the time to send them, and its WebSocket protocol, uvicorn's
    websockets-sansio one (what the direct frame writes rely on, docs/architecture.md) with a send
    budget for pongs (service/server_limits.py, service/ws_protocol.py); uvicorn's own limits and
    the trusted proxies (`edge_options`, which explains each); protocol pings every heartbeat, no
    compression, 64 KiB messages at most, our logging (log_config=None). Also used by bench/."""
    from flashwire.service.app import create_app
    from flashwire.service.server_limits import protocol_classes

    http_protocol, ws_protocol = protocol_classes(settings)
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        http=http_protocol,
        ws=ws_protocol,
        **_options(settings, access_log),
    )


def _options(settings: Settings, access_log: bool) -> dict[str, Any]:
    from flashwire.service.server_limits import edge_options

    return {
        **edge_options(settings),
        "ws_ping_interval": settings.heartbeat_s,
        "ws_ping_timeout": settings.heartbeat_s,
        "ws_per_message_deflate": False,
        "ws_max_size": 64 * 1024,
        "lifespan": "on",
        "log_config": None,
        "access_log": access_log,
        "timeout_graceful_shutdown": 5,
    }


def process_node_name(node: str, pid: int) -> str:
    """The node name one of a node's processes counts readers and reach under: `<node>.<pid>`."""
    return f"{node}.{pid}"


class ProcessConfig(uvicorn.Config):
    """uvicorn's configuration as sent to each of a node's processes: picklable (the application
    and protocol classes are placeholders), completed by `load` in the process itself."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int) -> None:
        # Placeholders, replaced in `load`: uvicorn pickles this object into every process.
        super().__init__(
            "flashwire.service.app:create_app",
            host=host,
            port=port,
            workers=workers,
            **_options(settings, True),
        )
        self.settings = settings
        self.supervisor_pid = os.getpid()

    def load(self) -> None:
        """In the process, before it serves: die with the supervisor, log like a node, and build
        this process's own application and protocol classes under its own node name."""
        _die_with_parent(self.supervisor_pid)
        configure_logging("service", self.settings.log_format)
        silence_server_lines()
        settings = dataclasses.replace(
            self.settings, node_name=process_node_name(self.settings.node_name, os.getpid())
        )
        built = server_config(settings, self.host, self.port, access_log=self.access_log)
        self.app, self.http, self.ws = built.app, built.http, built.ws
        super().load()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies, and leave at once if it already has."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning(
            "prctl(PR_SET_PDEATHSIG) failed (errno %d): this process may outlive its supervisor",
            ctypes.get_errno(),
        )
    if os.getppid() != parent_pid:
        # The supervisor died before the request above took effect.
        os.kill(os.getpid(), signal.SIGTERM)


def run_processes(settings: Settings, host: str, port: int, workers: int) -> int:
    """Serve on host:port with `workers` processes until SIGTERM or SIGINT (uvicorn's supervisor).

    :returns: the exit status: 0 after a requested stop, 3 (uvicorn's STARTUP_FAILURE) when a
        process failed to start and the supervisor stopped the node.
    """
    config = ProcessConfig(settings, host, port, workers)
    socket = config.bind_socket()
    log.info("node %s: %d processes on %s:%d", settings.node_name, workers, host, port)
    supervisor = Multiprocess(config, sockets=[socket])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        return STARTUP_FAILURE
    return 0
