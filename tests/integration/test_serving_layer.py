"""The serving layer under attack: the real service process, real sockets, loopback only.

Every test here talks to `python -m mira.entrypoints.web config.json` started as a subprocess
(granian's HTTP core in front of the Flask app), over raw TCP sockets on 127.0.0.1 where the
request is malformed or stalls, and asserts what a client notices: the status line, the JSON
body, the headers, when the server closes the connection, and that the service keeps serving.

Each worker count (`server.workers` 1 and 2) gets two services, started once for the module:
"guarded" with `server.header_timeout` and `server.body_timeout` 1 s (stalled connections are
cut quickly) and "patient" with the defaults (10 s, 60 s), so that the slow-client flood
stays in place while fresh clients probe.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.test_workers import _alive, every_worker_serves, served, worker_pids
from tests.support import Headers, ServiceProcess, http, wait_until

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
DEADLINE = 20.0
STATUS_LINE = re.compile(rb"HTTP/1\.[01] \d{3}")
PLAN = {
    "type": "generate_plan",
    "data": {"name": "Launch", "goals": ["MVP"], "duration_weeks": 2},
}
PIPELINED_HEALTH = b"GET /health HTTP/1.1\r\nHost: pipelined\r\n\r\n"


@dataclass
class Services:
    """The two services of one worker count, and their worker processes at start-up."""

    workers: int
    guarded: ServiceProcess  # server.header_timeout: HEADER_TIMEOUT
    patient: ServiceProcess  # server.header_timeout at its default (10 s)
    pids: dict[str, list[int]] = field(default_factory=dict)


@pytest.fixture(scope="module", params=[1, 2], ids=["workers=1", "workers=2"])
def services(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    workers: int = request.param
    guarded = {"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT}
    configs = {"guarded": guarded, "patient": {}}
    started: dict[str, ServiceProcess] = {}
    pids: dict[str, list[int]] = {}
    try:
        for name, server in configs.items():
            svc = ServiceProcess(
                tmp_path_factory.mktemp(f"{name}-w{workers}"),
                {"server": {"host": "127.0.0.1", "workers": workers, **server}},
            )
            started[name] = svc.start(wait_ready=False)  # both start at once
        for name, svc in started.items():
            wait_until(svc._ready, 30, message=f"{name} service ready")
            children = 0 if workers == 1 else workers  # workers 1: one process, no children
            wait_until(
                _has_workers(svc, children),
                DEADLINE,
                message=f"{children} worker processes of the {name} service",
            )
            pids[name] = worker_pids(svc)
        yield Services(workers, started["guarded"], started["patient"], pids)
    finally:
        for name, svc in started.items():
            svc.stop()
            for pid in pids.get(name, []):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _has_workers(svc: ServiceProcess, count: int) -> Callable[[], bool]:
    return lambda: len(worker_pids(svc)) == count


# -- raw HTTP over one socket ---------------------------------------------------------------
@dataclass
class Exchange:
    """Everything one connection received until the server closed it (or the deadline)."""

    raw: bytes
    closed: bool  # the server closed the connection (EOF or reset) before the deadline
    seconds: float

    def responses(self) -> list[tuple[int, Headers, bytes]]:
        """The responses in `raw`, in order: (status, headers, body)."""
        found: list[tuple[int, Headers, bytes]] = []
        rest = self.raw
        while rest and len(found) < 10:
            head, sep, rest = rest.partition(b"\r\n\r\n")
            assert sep, f"incomplete response head: {head[:300]!r}"
            status_line, *lines = head.decode("latin-1").split("\r\n")
            match = re.fullmatch(r"HTTP/1\.[01] (\d{3})( .*)?", status_line)
            assert match, f"not a status line: {status_line!r}"
            headers = Headers(tuple(part.strip() for part in x.split(":", 1)) for x in lines)
            length = int(headers.get("content-length", "0"))
            found.append((int(match.group(1)), headers, rest[:length]))
            rest = rest[length:]
        return found

    def only_response(self) -> tuple[int, Headers, bytes]:
        """The one response on this connection: exactly one status line in all of it."""
        lines = STATUS_LINE.findall(self.raw)
        assert len(lines) == 1, f"{len(lines)} status lines in {self.raw[:600]!r}"
        (response,) = self.responses()
        return response


def _send(sock: socket.socket, data: bytes, errors: list[OSError]) -> None:
    """`data` in 64 KiB pieces; stops at the first error (the server may close mid-body)."""
    for start in range(0, len(data), 65536):
        try:
            sock.sendall(data[start : start + 65536])
        except OSError as exc:
            errors.append(exc)
            return


def exchange(port: int, request: bytes, timeout: float = 5.0) -> Exchange:
    """Send `request` on a fresh connection (from a thread, so an answer that comes before the
    whole request is read is still received) and read until the server closes or `timeout`."""
    started = time.monotonic()
    deadline = started + timeout
    received = bytearray()
    closed = False
    errors: list[OSError] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(1.0)
        sender = threading.Thread(target=_send, args=(sock, request, errors), daemon=True)
        sender.start()
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        seconds = time.monotonic() - started
        sender.join(timeout)
    return Exchange(bytes(received), closed, seconds)


def chunked(body: bytes, size: int = 65536) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def post_head(*headers: str) -> bytes:
    lines = ["POST /api/v1/messages HTTP/1.1", "Host: mira", "Content-Type: application/json"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def error_json(body: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(body)
    assert payload["status"] == "error" and payload["correlation_id"], payload
    return payload


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds this connection (nothing to read, no EOF, no reset)."""
    sock.settimeout(0)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# -- 1. slow clients do not starve fresh ones ----------------------------------------------
IDLE_CONNECTIONS = 200
TRICKLING_CONNECTIONS = 100
TRICKLE = b"GET /health HTTP/1.1\r\nHost: slow\r\n"
TRICKLE_ROUNDS = 6  # one byte to every trickling connection each TRICKLE_EVERY seconds
TRICKLE_EVERY = 0.5


def test_health_and_ready_answer_within_1s_beside_300_stalled_connections(
    services: Services,
) -> None:
    svc = services.patient
    address = ("127.0.0.1", svc.port)
    probes: list[tuple[str, int, float]] = []
    rounds: list[int] = []
    send_errors: list[OSError] = []
    with ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(address, timeout=5))
            for _ in range(IDLE_CONNECTIONS)
        ]
        slow = [
            stack.enter_context(socket.create_connection(address, timeout=5))
            for _ in range(TRICKLING_CONNECTIONS)
        ]
        stop = threading.Event()

        def trickle() -> None:
            for index in range(TRICKLE_ROUNDS):
                for sock in slow:
                    try:
                        sock.send(TRICKLE[index : index + 1])
                    except OSError as exc:
                        send_errors.append(exc)
                rounds.append(index)
                if stop.wait(TRICKLE_EVERY):
                    return

        trickler = threading.Thread(target=trickle, name="trickle", daemon=True)
        trickler.start()
        deadline = time.monotonic() + TRICKLE_ROUNDS * TRICKLE_EVERY + 10
        try:
            for _ in range(40):
                for path in ("/health", "/ready"):
                    sent = time.monotonic()
                    status = svc.get(path, timeout=5)[0]  # a fresh connection each time
                    probes.append((path, status, time.monotonic() - sent))
                if not trickler.is_alive() or time.monotonic() > deadline:
                    break
                trickler.join(0.2)  # the next probe in 0.2 s, or now if the trickle is done
        finally:
            stop.set()
            trickler.join(5)
        held = sum(is_open(sock) for sock in idle + slow)

    assert len(rounds) == TRICKLE_ROUNDS and send_errors == []
    assert len(probes) >= 10, probes
    slow_or_failed = [p for p in probes if p[1] != 200 or p[2] >= 1.0]
    assert slow_or_failed == [], slow_or_failed
    assert {path for path, _, _ in probes} == {"/health", "/ready"}
    # the flood was in place all along: the server had not shed it to answer the probes
    assert held == IDLE_CONNECTIONS + TRICKLING_CONNECTIONS


# -- 2. server.header_timeout -------------------------------------------------------------
@pytest.mark.parametrize(
    "sent", [b"", b"GET / HTTP/1.1\r\n"], ids=["sends-nothing", "request-line-only"]
)
def test_a_stalled_connection_is_closed_after_header_timeout(
    services: Services, sent: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", services.guarded.port), timeout=5) as sock:
        started = time.monotonic()
        if sent:
            sock.sendall(sent)
        sock.settimeout(0.5)
        try:
            early: bytes | str = sock.recv(1)
        except TimeoutError:
            early = "still open"  # after 0.5 s: the setting is not ignored or near 0
        except ConnectionResetError as exc:
            early = repr(exc)
        assert early == "still open", f"closed within 0.5 s: {early!r}"
        received = b"<nothing: still open after 10 s>"
        sock.settimeout(10 - (time.monotonic() - started))
        try:
            received = sock.recv(1024)
        except ConnectionResetError:
            received = b""
        except TimeoutError:
            pass
        seconds = time.monotonic() - started
    assert received == b"", received
    assert 0.5 < seconds < HEADER_TIMEOUT + 2.0, f"closed after {seconds:.2f} s"


# -- 2b. slow bodies: server.body_timeout, and they do not starve fresh clients -------------
SLOW_BODIES = 100
PLAN_BYTES = json.dumps(PLAN).encode()


def test_health_answers_within_1s_beside_100_connections_stalled_mid_body(
    services: Services,
) -> None:
    """Each stalled body holds a thread of its own while it waits, not one of server.threads
    (32): a probe, and a full plan message, still answer at once."""
    svc = services.patient
    head = post_head(f"Content-Length: {len(PLAN_BYTES)}") + PLAN_BYTES[:10]
    with ExitStack() as stack:
        stalled = []
        for _ in range(SLOW_BODIES):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", svc.port), 5))
            sock.sendall(head)
            stalled.append(sock)
        wait_until(lambda: svc.get("/health", timeout=5)[0] == 200, DEADLINE, message="up")
        probes = []
        for _ in range(10):
            for path in ("/health", "/ready"):
                sent = time.monotonic()
                probes.append((path, svc.get(path, timeout=5)[0], time.monotonic() - sent))
        sent = time.monotonic()
        plan = http("POST", svc.url + "/api/v1/messages", PLAN, timeout=5)[0]
        plan_seconds = time.monotonic() - sent
        held = sum(is_open(sock) for sock in stalled)
    assert [p for p in probes if p[1] != 200 or p[2] >= 1.0] == [], probes
    assert plan == 200 and plan_seconds < 1.0, (plan, plan_seconds)
    assert held == SLOW_BODIES  # the stalled bodies were all still waiting (60 s default)


def test_a_body_not_in_within_body_timeout_is_408_json_and_the_connection_closes(
    services: Services,
) -> None:
    with socket.create_connection(("127.0.0.1", services.guarded.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(
            post_head(f"Content-Length: {len(PLAN_BYTES)}", "X-Request-ID: slow-body-1")
            + PLAN_BYTES[:10]
        )
        sock.settimeout(0.5)
        try:
            early: bytes | str = sock.recv(1)
        except TimeoutError:
            early = "still open"
        assert early == "still open", f"answered within 0.5 s: {early!r}"
        sock.settimeout(0.2)
        received = bytearray()
        closed = False
        while time.monotonic() - started < BODY_TIMEOUT + 5:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                closed = True
                break
            received += chunk
        seconds = time.monotonic() - started
    got = Exchange(bytes(received), closed, seconds)
    status, headers, body = got.only_response()
    assert status == 408 and headers["x-request-id"] == "slow-body-1"
    assert headers["connection"].lower() == "close"
    payload = error_json(body)
    assert payload["correlation_id"] == "slow-body-1"
    assert "server.body_timeout" in payload["error"]
    # the connection is cut too, not left open until the client gives up
    assert closed, f"still open after {seconds:.1f} s"
    assert BODY_TIMEOUT <= seconds < BODY_TIMEOUT + 3, f"closed after {seconds:.2f} s"


def test_a_body_that_arrives_in_pieces_within_body_timeout_is_served(
    services: Services,
) -> None:
    request = post_head(f"Content-Length: {len(PLAN_BYTES)}")
    with socket.create_connection(("127.0.0.1", services.guarded.port), timeout=5) as sock:
        sock.sendall(request + PLAN_BYTES[:10])
        time.sleep(0.3)  # the pause under test: a body that is slow but in time
        sock.sendall(PLAN_BYTES[10:])
        sock.settimeout(5)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]


# -- 3./4. ambiguous framing ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"0\r\n\r\n", 400), (chunked(json.dumps(PLAN).encode()), 200)],
    ids=["empty-chunked-body", "chunked-plan-message"],
)
def test_content_length_with_transfer_encoding_is_read_as_chunked_and_nothing_is_smuggled(
    services: Services, body: bytes, expected: int
) -> None:
    """The engine (hyper) lets Transfer-Encoding override Content-Length and closes the
    connection after the answer (RFC 9112 6.1): the request is answered once, as its chunked
    body says (the classic CL.TE probe's empty body: 400; a well-formed plan: 200), and the
    request smuggled behind it is never served. The app cannot answer 400 for the mix itself:
    the engine drops Content-Length before the app sees the request (DEPLOYMENT.md)."""
    request = post_head("Content-Length: 5", "Transfer-Encoding: chunked") + body
    got = exchange(services.guarded.port, request + PIPELINED_HEALTH)
    assert got.closed, f"still open after {got.seconds:.1f} s: {got.raw[:300]!r}"
    status, _, response_body = got.only_response()  # the pipelined GET got no answer
    assert status == expected, response_body


def test_two_content_lengths_are_400_and_the_connection_closes(services: Services) -> None:
    request = post_head("Content-Length: 5", "Content-Length: 6") + b"hello!"
    got = exchange(services.guarded.port, request + PIPELINED_HEALTH)
    assert got.closed, f"still open after {got.seconds:.1f} s: {got.raw[:300]!r}"
    status, _, _ = got.only_response()
    assert status == 400


# -- 5./6. size limits ----------------------------------------------------------------------
def test_a_chunked_body_over_max_body_bytes_is_413_json_and_the_connection_closes(
    services: Services,
) -> None:
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    request = post_head("Transfer-Encoding: chunked") + chunked(body)
    got = exchange(services.guarded.port, request, timeout=10)
    assert got.closed, f"still open after {got.seconds:.1f} s: {got.raw[:300]!r}"
    status, headers, response_body = got.only_response()
    assert status == 413, response_body
    payload = error_json(response_body)
    assert "max_body_bytes" in payload["error"] and "1048576" in payload["error"]
    assert headers.get("X-Request-ID") == payload["correlation_id"]


def test_a_70_kib_header_is_431_json_naming_max_header_bytes(services: Services) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: mira\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    got = exchange(services.guarded.port, request)
    assert got.closed, f"still open after {got.seconds:.1f} s: {got.raw[:300]!r}"
    status, headers, body = got.only_response()
    assert status == 431, body
    payload = error_json(body)
    assert "server.max_header_bytes" in payload["error"]
    assert headers.get("X-Request-ID") == payload["correlation_id"]


def test_101_headers_are_431_and_the_connection_closes(services: Services) -> None:
    many = b"".join(b"X-Header-%d: v\r\n" % i for i in range(100))
    request = b"GET /health HTTP/1.1\r\nHost: mira\r\n" + many + b"\r\n"  # Host + 100 more
    got = exchange(services.guarded.port, request)
    assert got.closed, f"still open after {got.seconds:.1f} s: {got.raw[:300]!r}"
    status, _, _ = got.only_response()  # the engine's own answer, with an empty body
    assert status == 431


# -- 7. method ------------------------------------------------------------------------------
def test_delete_on_health_is_405_json_with_allow(services: Services) -> None:
    status, headers, body = http("DELETE", services.guarded.url + "/health", timeout=5)
    assert status == 405, body
    error_json(body)
    allowed = {m.strip().upper() for m in headers.get("Allow", "").split(",")}
    assert "GET" in allowed, headers


# -- 8. still standing ----------------------------------------------------------------------
def test_after_all_that_the_service_still_serves(services: Services) -> None:
    for name, svc in (("guarded", services.guarded), ("patient", services.patient)):
        assert svc.proc is not None and svc.proc.poll() is None, f"{name}: {svc.stderr()}"
        status, _, body = svc.get("/health", timeout=5)
        assert (status, json.loads(body)) == (200, {"status": "healthy"}), name
        assert svc.get("/ready", timeout=5)[0] == 200, name
        assert svc.post("/api/v1/messages", PLAN, timeout=5)[0] == 200, name
        assert not svc.find("Unhandled error while handling request"), name
        if services.workers > 1:
            # no worker fell over and was replaced, and every one of them still answers
            assert worker_pids(svc) == services.pids[name], name
            assert not svc.find("Worker exited; replacing it"), name
            every_worker_serves(svc, services.workers, since=len(served(svc)))
