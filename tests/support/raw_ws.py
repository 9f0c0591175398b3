"""A WebSocket client on a bare socket, for frames no library would send.

Text frames that are not UTF-8, frames after a close, a peer that never
answers pings or never reads: the client builds each frame itself
(RFC 6455 §5.2) and reads the server's frames as they come.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from dataclasses import dataclass

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_TEXT", "RawFrame", "RawSocket"]

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class RawFrame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode(errors="replace")


class RawSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    @classmethod
    def connect(cls, port: int, path: str, headers: dict[str, str] | None = None) -> RawSocket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = cls(sock)
        head = raw._read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise ConnectionError(f"handshake refused: {head[:200]!r}")
        return raw

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self._buffer += chunk
        head, self._buffer = self._buffer.split(marker, 1)
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """One masked client frame, whatever its payload."""
        header = bytes([(0x80 if fin else 0) | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())

    def recv_frame(self, timeout_s: float = 15.0) -> RawFrame:
        self.sock.settimeout(timeout_s)
        first, second = self._read_exactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._read_exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._read_exactly(8))[0]
        return RawFrame(first & 0x0F, self._read_exactly(size))

    def recv_until_close(self, timeout_s: float = 15.0) -> RawFrame:
        """Frames until the server's close frame (pings left unanswered)."""
        while True:
            frame = self.recv_frame(timeout_s)
            if frame.opcode == OP_CLOSE:
                return frame

    def close(self) -> None:
        self.sock.close()
