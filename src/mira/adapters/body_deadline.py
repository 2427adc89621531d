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
   (granian tells the app neither the peer's port nor the socket); requests due in the same
   tick are answered together, and a peer's sockets are cut only if exactly as many wrote
   exactly the 408s sent to that peer;
3. shuts that socket down, so hyper sees the end of the stream, drops the connection and the
   blocked read returns: the Python thread is free again.

Where the sockets cannot be told apart (fewer or more match), the answer is still sent and the
thread waits for the client to go; that is logged.
"""

from __future__ import annotations

import contextlib
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

from mira.adapters.web_json import error_payload

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


_GONE = object()


def _host(address: str) -> str:
    return address.removeprefix("::ffff:")  # an IPv4 client on a dual-stack socket


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


def connections(local_port: int, peers: set[str]) -> list[tuple[socket.socket, str]]:
    """This process's TCP connections on `local_port` from any of `peers`, each on a dup of its
    fd, with its peer's address."""
    found: list[tuple[socket.socket, str]] = []
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
            ):
                peer = _host(str(sock.getpeername()[0]))
                if peer in peers:
                    found.append((sock, peer))
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

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.local_port = 0  # the server's, given at start
        self._reading: dict[_Reading, None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def message(self) -> str:
        return f"request body not received within server.body_timeout ({self.timeout:g} s)"

    def start(self, local_port: int) -> None:
        """Watch from now on; `local_port` is where the server's connections are."""
        self.local_port = local_port
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
            due = [
                reading
                for reading in list(self._reading)
                if reading.deadline <= now and self._reading.pop(reading, _GONE) is not _GONE
            ]  # popped here, or by `end` if its body came meanwhile: never both
            if due:
                try:
                    self._answer(due)
                except Exception:  # the watchdog must outlive any one request
                    log.exception("Body deadline: answering slow requests failed")

    def _answer(self, due: list[_Reading]) -> None:
        """408 to each request in `due`, then cut their connections, all in one pass over
        this process's sockets (an attack stalls many bodies at once)."""
        peer_of = {r: _host(str(r.environ.get("REMOTE_ADDR", ""))) for r in due}
        candidates = connections(self.local_port, set(peer_of.values()))
        try:
            before = {sock: (peer, _written(sock)) for sock, peer in candidates}
            sent: dict[str, list[int]] = {}
            for reading in due:
                request_id = str(reading.environ.get("mira.request_id", "-"))
                body = orjson.dumps(error_payload(self.message, request_id))
                headers = [
                    ("content-type", "application/json"),
                    ("x-request-id", request_id),
                    ("connection", "close"),
                ]
                reading.proto.response_bytes(408, headers, body)
                sent.setdefault(peer_of[reading], []).append(wire_length(headers, body))
            cut = self._cut(before, sent)
            for reading in due:
                environ = reading.environ
                log.warning(
                    "Request body timed out",
                    correlation_id=environ.get("mira.request_id"),
                    method=environ.get("REQUEST_METHOD"),
                    path=environ.get("PATH_INFO"),
                    body_timeout=self.timeout,
                    connection_closed=peer_of[reading] in cut,
                )
        finally:
            for sock, _ in candidates:
                sock.close()

    def _cut(
        self,
        before: dict[socket.socket, tuple[str, int | None]],
        sent: dict[str, list[int]],
    ) -> set[str]:
        """Shut down, per peer, the sockets that wrote exactly the 408s sent to it (and only
        if they are exactly as many); the peers whose connections were cut."""
        give_up = time.monotonic() + WRITE_WAIT
        while True:
            moved: dict[str, list[tuple[int, socket.socket]]] = {peer: [] for peer in sent}
            for sock, (peer, was) in before.items():
                now = _written(sock)
                if was is not None and now is not None and now - was in sent[peer]:
                    moved[peer].append((now - was, sock))
            found = {
                peer
                for peer, lengths in sent.items()
                if sorted(d for d, _ in moved[peer]) == sorted(lengths)
            }
            if len(found) == len(sent) or time.monotonic() >= give_up:
                break
            time.sleep(0.005)
        for peer in found:
            for _, sock in moved[peer]:
                with contextlib.suppress(OSError):  # closed meanwhile: nothing left to cut
                    sock.shutdown(socket.SHUT_RDWR)  # after its 408, which is already queued
        return found
