"""A bare-socket WebSocket client for tests that need to misbehave: stop reading, never answer pings."""

from __future__ import annotations

import base64
import os
import socket
import struct


class RawWebSocket:
    """Handshake by hand, then read frames only when the test says so."""

    def __init__(self, port: int, query: str, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))

    def _fill(self, size: int, timeout_s: float) -> bool:
        self.sock.settimeout(timeout_s)
        while len(self.buffer) < size:
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_frame(self, timeout_s: float = 5.0) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame, or None at EOF / reset / timeout."""
        if not self._fill(2, timeout_s):
            return None
        opcode = self.buffer[0] & 0x0F
        length = self.buffer[1] & 0x7F
        offset = 2
        if length == 126:
            if not self._fill(4, timeout_s):
                return None
            length = struct.unpack("!H", self.buffer[2:4])[0]
            offset = 4
        elif length == 127:
            if not self._fill(10, timeout_s):
                return None
            length = struct.unpack("!Q", self.buffer[2:10])[0]
            offset = 10
        if not self._fill(offset + length, timeout_s):
            return None
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, payload

    def read_until_close(self, timeout_s: float = 10.0) -> tuple[list[bytes], int | None]:
        """Text payloads read, and the close code (None if the connection ended without one)."""
        texts: list[bytes] = []
        while True:
            frame = self.read_frame(timeout_s)
            if frame is None:
                return texts, None
            opcode, payload = frame
            if opcode == 0x1:
                texts.append(payload)
            elif opcode == 0x8:
                return texts, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def close(self) -> None:
        self.sock.close()
