"""The supervisor <-> worker control channel: length-prefixed JSON over a Unix socketpair.

Snapshots travel here, secret values included: never through disk, argv or the environment.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any

import orjson

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024


class ChannelClosed(Exception):
    """The other side went away."""


class Channel:
    """One end of a control channel; `send` may be called from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message)
        with self._send_lock:
            try:
                self.sock.sendall(_HEADER.pack(len(data)) + data)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None

    def recv(self) -> dict[str, Any]:
        """The next message (blocking); ChannelClosed at end of stream."""
        (size,) = _HEADER.unpack(self._exactly(_HEADER.size))
        if size > MAX_MESSAGE:
            raise ChannelClosed(f"message of {size} bytes is over the limit")
        message: dict[str, Any] = orjson.loads(self._exactly(size))
        return message

    def _exactly(self, size: int) -> bytes:
        chunks: list[bytes] = []
        while size:
            try:
                chunk = self.sock.recv(min(size, 1 << 20))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if not chunk:
                raise ChannelClosed("end of stream")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
