"""Timestamps of a line's way through Redis, from the server's MONITOR feed (bench/latency.py --legs).

MONITOR reports every command the server runs, those run inside Lua scripts included (client
"lua"), with the server's wall-clock time in microseconds. On one machine that is the clock the
bench's `time.time()` reads, so the POST's sending and answer (the bench), the desk entry's XADD
and the ticker XADD (the desk script and the worker's commit, seen here) and the first delivery
(the load generator) fall on one time line, and each leg of the publish path is a difference of
two of them. MONITOR costs the server a little per command: use it to split a run into legs, and
take the headline figures from a run without it.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

# `+1733650000.123456 [0 127.0.0.1:51234] "XADD" "{fw}:desk" ...` (or `[0 lua]`).
_LINE = re.compile(rb'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"(.*)$')
LINE_ID = re.compile(rb"(?:en|ar|es)-[0-9a-f]{16}")


@dataclass(frozen=True)
class Command:
    """One command as MONITOR reported it: server time (s), client ("lua" or host:port), name,
    and the rest of the line (its arguments, quoted as MONITOR quotes them)."""

    at: float
    client: str
    name: str
    args: bytes

    def line_ids(self) -> list[str]:
        """Line ids named in the arguments."""
        return [found.decode() for found in LINE_ID.findall(self.args)]


class RedisTrace:
    """A MONITOR connection read in a thread until `stop()`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        self._sock.sendall(b"MONITOR\r\n")
        self._raw = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            self._raw += chunk

    def stop(self) -> list[Command]:
        """Close the connection; every command seen, in order."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
        commands = []
        for raw in bytes(self._raw).split(b"\r\n"):
            match = _LINE.match(raw)
            if match is not None:
                at, client, name, args = match.groups()
                commands.append(Command(float(at), client.decode(), name.decode().upper(), args))
        return commands


def desk_and_ticker_times(commands: list[Command]) -> tuple[dict[str, float], dict[str, float]]:
    """Per line id: the time of its post's desk XADD and of its first ticker XADD."""
    desk: dict[str, float] = {}
    ticker: dict[str, float] = {}
    for command in commands:
        if command.name != "XADD":
            continue
        key = command.args.split(b'" "', 1)[0]
        target = desk if key.endswith(b":desk") else ticker if b":ticker:" in key else None
        if target is not None:
            for line_id in command.line_ids()[:1]:
                target.setdefault(line_id, command.at)
    return desk, ticker


def trace_of(commands: list[Command], start: float, end: float) -> list[str]:
    """The commands run between `start` and `end` (s), each as `+µs client NAME first-args`."""
    out = []
    for command in commands:
        if start <= command.at <= end:
            head = command.args[:60].decode(errors="replace").strip()
            out.append(f"+{(command.at - start) * 1e6:7.0f} µs  {command.client:<21} {command.name} {head}")
    return out
