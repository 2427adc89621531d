"""server.body_timeout for the granian engine: 408 to a body too slow, and its connection cut.

granian 2.8.9 has no body read timeout (upstream: "wontfix", emmett-framework/granian#728): a
read of `wsgi.input` waits in Rust until the body is complete or the client leaves, and
hyper keeps a connection open while its request body is unread, even after the answer.
So Mira keeps the deadline itself. Each request registers while its body is read; a watchdog
thread, past the deadline:

1. answers the request 408 (Mira's JSON, its X-Request-ID, `Connection: close`) through
   granian's protocol object, which takes the answer from any thread;
2. finds the request's connection among this process's sockets: same local port and peer
   address, and exactly the answer's bytes written since a snapshot taken just before it
   (granian tells the app neither the peer's port nor the socket);
3. shuts that socket down, so hyper sees the end of the stream, drops the connection and the
   blocked read returns: the Python thread is free again.

Where the socket cannot be told apart (none, or two, match), the answer is still sent and the
thread waits for the client to go; that is logged.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

log = structlog.get_logger("mira.server")

#: How often the watchdog looks at the deadlines.
TICK = 0.1
#: How long it waits for granian to write the 408 before it gives up finding the connection.
WRITE_WAIT = 1.0
_TCP_INFO_SIZE = 232
_NOTSENT, _BYTES_SENT = 144, 200  # struct tcp_info offsets (Linux >= 4.19)
_STATUS_LINE = b"HTTP/1.1 408 Request Timeout\r\n"
_DATE = len(b"date: Wed, 02 Dec 2026 13:04:55 GMT\r\n")
_SERVER = b"server: granian\r\n"


@dataclass(eq=False)
class _Reading:
    deadline: float
    proto: Any
    environ: dict[str, Any]


def _same_host(a: str, b: str) -> bool:
    return a.removeprefix("::ffff:") == b.removeprefix("::ffff:")


def _written(sock: socket.socket) -> int | None:
    """Bytes this TCP socket has sent or holds to send."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < _BYTES_SENT + 8:
        return None
    (notsent,) = struct.unpack_from("I", info, _NOTSENT)
    (sent,) = struct.unpack_from("Q", info, _BYTES_SENT)
    return int(notsent + sent)


def connections(local_port: int, peer: str) -> list[socket.socket]:
    """This process's TCP connections on `local_port` from `peer`, each on a dup of its fd."""
    found: list[socket.socket] = []
    seen: set[int] = set()  # by inode: a dup made here may take a number listed before
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            info = os.fstat(fd)
            if not stat.S_ISSOCK(info.st_mode) or info.st_ino in seen:
                continue
            seen.add(info.st_ino)
            dup = os.dup(fd)
        except (ValueError, OSError):
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        try:
            if (
                sock.type == socket.SOCK_STREAM
                and sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.getsockname()[1] == local_port
                and _same_host(str(sock.getpeername()[0]), peer)
            ):
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    return found


def wire_length(headers: list[tuple[str, str]], body: bytes) -> int:
    """The bytes hyper writes for a 408 with these headers and body (granian 2.8.9)."""
    head = sum(len(k) + len(v) + 4 for k, v in headers)
    length = len(b"content-length: %d\r\n" % len(body))
    return len(_STATUS_LINE) + head + len(_SERVER) + length + _DATE + 2 + len(body)


class BodyDeadlines:
    """The requests of one server reading their bodies, and the watchdog of their deadline."""

    def __init__(self, timeout: float, local_port: int) -> None:
        self.timeout = timeout
        self.local_port = local_port
        self._reading: dict[_Reading, None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cut = 0  # connections shut down after their 408 (for tests and logs)

    @property
    def message(self) -> str:
        return f"request body not received within server.body_timeout ({self.timeout:g} s)"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="body-deadline", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def begin(self, proto: Any, environ: dict[str, Any]) -> _Reading:
        reading = _Reading(time.monotonic() + self.timeout, proto, environ)
        self._reading[reading] = None
        return reading

    def end(self, reading: _Reading) -> bool:
        """True when the body came in time; False when the watchdog answered it 408."""
        try:
            del self._reading[reading]  # one of the two takes it: the GIL orders them
        except KeyError:
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            now = time.monotonic()
            for reading in [r for r in list(self._reading) if r.deadline <= now]:
                if self._reading.pop(reading, 0) is not None:
                    continue  # its body came meanwhile
                try:
                    self._answer(reading)
                except Exception:  # the watchdog must outlive any one request
                    log.exception("Body deadline: answering a slow request failed")

    def _answer(self, reading: _Reading) -> None:
        environ = reading.environ
        request_id = str(environ.get("mira.request_id", "-"))
        peer = str(environ.get("REMOTE_ADDR", ""))
        body = orjson.dumps(
            {"status": "error", "error": self.message, "correlation_id": request_id}
        )
        headers = [
            ("content-type", "application/json"),
            ("x-request-id", request_id),
            ("connection", "close"),
        ]
        candidates = connections(self.local_port, peer)
        try:
            before = {sock: _written(sock) for sock in candidates}
            reading.proto.response_bytes(408, headers, body)
            expected = wire_length(headers, body)
            match: list[socket.socket] = []
            give_up = time.monotonic() + WRITE_WAIT
            while not match and time.monotonic() < give_up:
                match = [
                    sock
                    for sock, was in before.items()
                    if was is not None and (_written(sock) or 0) - was == expected
                ]
                if not match:
                    time.sleep(0.005)
            if len(match) == 1:
                match[0].shutdown(socket.SHUT_RDWR)  # after the 408, which is already queued
                self.cut += 1
            log.warning(
                "Request body timed out",
                correlation_id=request_id,
                method=environ.get("REQUEST_METHOD"),
                path=environ.get("PATH_INFO"),
                body_timeout=self.timeout,
                connection_closed=len(match) == 1,
            )
        finally:
            for sock in candidates:
                sock.close()
