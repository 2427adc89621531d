"""The granian engine adapter over real loopback HTTP: its drain drops nothing accepted.

A real `GranianServer` (granian's Rust core in this process) serving a small WSGI app; the
lifecycle's steps are called in the order the runtime calls them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest

from mira.adapters.granian_server import GranianServer, PortInUseError
from mira.adapters.listener import queued
from tests.support import wait_until

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
# `/held` requests stay in the app until a test sets this (or 30 s pass): a test that needs
# N requests in flight at once waits for them to be there, however slowly a loaded machine
# starts them, instead of racing a fixed sleep.
RELEASE = threading.Event()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    RELEASE.clear()
    try:
        yield RELEASE
    finally:
        RELEASE.set()


def slow_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """`/slow?ms=N` sleeps N ms; `/held` waits for RELEASE; `/boom` raises; else at once."""
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("app failure")
    if path == "/held":
        RELEASE.wait(30)
    if path == "/slow":
        ms = int(parse_qs(environ["QUERY_STRING"]).get("ms", ["0"])[0])
        time.sleep(ms / 1000)
    body = f"done {path}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@dataclass
class Reply:
    status: int
    connection: str | None
    body: bytes


def get(address: tuple[str, int], path: str, timeout: float = 10) -> Reply:
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheader("Connection"), resp.read())
    finally:
        conn.close()


def fire(
    pool: ThreadPoolExecutor, address: tuple[str, int], path: str, n: int
) -> list[Future[Reply]]:
    return [pool.submit(get, address, path) for _ in range(n)]


def assert_refused(address: tuple[str, int]) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()


class Tally:
    """Outcome counts shared by the load threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def __getitem__(self, outcome: str) -> int:
        with self._lock:
            return self._counts[outcome]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)


def _client(address: tuple[str, int], stop: threading.Event, counts: Tally) -> None:
    deadline = time.monotonic() + 15
    for _ in range(3000):
        if stop.is_set() or time.monotonic() > deadline:
            return
        try:
            sock = socket.create_connection(address, timeout=5)
        except ConnectionRefusedError:
            counts.add("refused")
            time.sleep(0.005)  # a refused client backs off briefly, as a real one would
            continue
        conn = http.client.HTTPConnection(*address, timeout=5)
        conn.sock = sock
        try:
            conn.request("GET", "/slow?ms=5")
            resp = conn.getresponse()
            resp.read()
            counts.add("ok" if resp.status == 200 else f"status {resp.status}")
        except OSError as exc:  # reset, EOF, timeout after an accepted connect
            counts.add(f"failed {type(exc).__name__}")
        except http.client.HTTPException as exc:
            counts.add(f"failed {type(exc).__name__}")
        finally:
            conn.close()


@contextmanager
def running_server(
    threads: int = 8,
    serve: bool = True,
    max_threads: int | None = None,
    host: str = HOST,
    **settings: int,
) -> Iterator[GranianServer]:
    server = GranianServer(
        slow_app, host=host, port=0, threads=threads, max_threads=max_threads, **settings
    )
    server.bind()
    loop = threading.Thread(target=server.serve_forever, name="test-serve", daemon=True)
    if serve:
        loop.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)
        if serve:
            loop.join(5)
            assert not loop.is_alive(), "serve_forever did not return after stop()"


def address_of(server: GranianServer) -> tuple[str, int]:
    address = server.bound_address
    assert address is not None
    return address


def test_in_flight_requests_complete_and_new_connections_are_refused(
    release: threading.Event,
) -> None:
    with running_server(threads=32) as server, ThreadPoolExecutor(32) as pool:
        address = address_of(server)
        replies = fire(pool, address, "/held", 32)
        wait_until(lambda: server.in_flight == 32, 15, message="32 requests in the app")

        server.start_draining()
        server.close_listener()
        assert_refused(address)
        assert server.in_flight == 32, "the drain began with every request still in the app"

        release.set()
        assert server.wait_drained(timeout=10) == 0
        results = [f.result(timeout=10) for f in replies]
        assert [r.status for r in results] == [200] * 32
        assert {r.connection for r in results} == {"close"}
        assert server.in_flight == 0


def test_requests_beyond_the_threads_wait_and_are_served_after_the_listener_closes(
    release: threading.Event,
) -> None:
    with running_server(threads=4) as server, ThreadPoolExecutor(12) as pool:
        address = address_of(server)
        replies = fire(pool, address, "/held", 12)
        # all 12 are accepted and in Mira's hands: 4 run the app, 8 wait for a turn
        wait_until(lambda: server.in_flight == 12, 15, message="12 requests taken in")
        assert _established(address[1]) == 12

        server.start_draining()
        server.close_listener()
        assert_refused(address)

        release.set()
        assert server.wait_drained(timeout=15) == 0
        assert [f.result(timeout=5).status for f in replies] == [200] * 12


@pytest.mark.parametrize("host", [HOST, "::1"])
def test_connections_waiting_in_the_listen_backlog_are_served_not_reset(host: str) -> None:
    # Without a serve loop nothing accepts, so the handshakes wait in the kernel's backlog;
    # the engine starts once they are there, and the listener closes straight away. Over
    # IPv6 too: the filter that drops new SYNs reads the TCP header there as well.
    with (
        running_server(threads=4, serve=False, host=host) as server,
        ThreadPoolExecutor(6) as pool,
    ):
        address = address_of(server)
        replies = fire(pool, address, "/slow?ms=100", 6)
        sock = server._sock
        assert sock is not None
        wait_until(lambda: queued(sock) == 6, 5, message="6 handshakes in the backlog")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        server.close_listener()
        assert_refused(address)

        assert server.wait_drained(timeout=10) == 0
        assert [f.result(timeout=5).status for f in replies] == [200] * 6


def test_drain_deadline_reports_the_abandoned_request_and_stop_is_bounded() -> None:
    with running_server(threads=2) as server, ThreadPoolExecutor(1) as pool:
        address = address_of(server)
        slow = pool.submit(get, address, "/slow?ms=6000")
        wait_until(lambda: server.in_flight == 1, 5, message="the slow request in the app")
        server.start_draining()
        server.close_listener()

        # Bounded by the timeouts, not by the 6 s request (the bounds only tell them apart).
        started = time.monotonic()
        assert server.wait_drained(timeout=0.5) == 1
        assert time.monotonic() - started < 3.0
        started = time.monotonic()
        server.stop(timeout=1.0)
        assert time.monotonic() - started < 3.0
        assert slow.result(timeout=10).status == 200  # granian still finishes it


def _drain_under_load(clients: int = 12, host: str = HOST) -> Counter[str]:
    counts = Tally()
    stop = threading.Event()
    with running_server(threads=8, host=host) as server:
        port = address_of(server)[1]
        # on "::", every other client comes over IPv4: a dual-stack listener takes both
        addresses = [("::1", port), ("127.0.0.1", port)] if host == "::" else [(host, port)]
        workers = [
            threading.Thread(
                target=_client, args=(addresses[i % len(addresses)], stop, counts), daemon=True
            )
            for i in range(clients)
        ]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: counts["ok"] >= 50, 10, message="load to flow")
            server.start_draining()
            served_before_close = counts["ok"]
            wait_until(
                lambda: counts["ok"] >= served_before_close + 50,
                10,
                message="serving while draining",
            )
            server.close_listener()
            wait_until(lambda: counts["refused"] >= 20, 10, message="clients to see refusals")
        finally:
            stop.set()
            for worker in workers:
                worker.join(10)
        assert server.wait_drained(timeout=5) == 0
    return counts.snapshot()


def test_no_accepted_request_fails_while_draining_under_load() -> None:
    totals: Counter[str] = Counter()
    for round_no in range(10):
        counts = _drain_under_load()
        failures = {k: v for k, v in counts.items() if k not in {"ok", "refused"}}
        assert failures == {}, f"round {round_no}: {dict(counts)}"
        totals.update(counts)
    assert totals["ok"] >= 1000 and totals["refused"] >= 200


def test_a_dual_stack_listener_drains_ipv4_and_ipv6_clients_alike() -> None:
    """host "::" takes IPv4 and IPv6 connections on one socket, and its drain drops none."""
    for round_no in range(3):
        counts = _drain_under_load(host="::")
        failures = {k: v for k, v in counts.items() if k not in {"ok", "refused"}}
        assert failures == {}, f"round {round_no}: {dict(counts)}"
        assert counts["ok"] >= 100 and counts["refused"] >= 20


def test_bind_on_a_port_in_use_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = GranianServer(slow_app, host=HOST, port=port)
        with pytest.raises(PortInUseError) as info:
            server.bind()
    assert f"{HOST}:{port}" in str(info.value) and "address already in use" in str(info.value)


def test_app_errors_become_500_and_the_server_keeps_serving() -> None:
    with running_server(threads=2) as server:
        address = address_of(server)
        for _ in range(4):  # more failures than threads: none of them died
            assert get(address, "/boom").status == 500
        assert get(address, "/").status == 200
        assert server.in_flight == 0


def test_an_app_failure_the_engine_catches_is_mira_s_json_500_with_the_request_id() -> None:
    with running_server() as server:
        conn = http.client.HTTPConnection(*address_of(server), timeout=10)
        try:
            conn.request("GET", "/boom", headers={"X-Request-ID": "boom-1"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
    assert resp.status == 500 and resp.getheader("X-Request-ID") == "boom-1"
    assert resp.getheader("Content-Type") == "application/json"
    assert body == {"status": "error", "error": "internal server error", "correlation_id": "boom-1"}


def test_the_engine_does_not_hand_the_process_environment_to_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """granian's own WSGI wrapper copies os.environ into every request's environ; secrets
    passed in the environment must not reach a request (a debug page, an error report)."""
    monkeypatch.setenv("MIRA_TEST_SECRET_IN_ENV", "s3cr3t-value")
    seen: list[dict[str, object]] = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [])  # type: ignore[operator]
        return [b"ok"]

    server = GranianServer(app, host=HOST, port=0, threads=1)
    address = server.bind()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert get(address, "/").status == 200
    finally:
        server.stop(timeout=5)
    assert seen and "MIRA_TEST_SECRET_IN_ENV" not in seen[0]
    assert "s3cr3t-value" not in repr(seen[0])


def test_bad_settings_are_rejected_with_the_setting_named() -> None:
    for bad, name in (
        ({"threads": 0}, "threads"),
        ({"request_queue_size": 0}, "request_queue_size"),
        ({"max_connections": 0}, "max_connections"),
        ({"port": 70000}, "port"),
    ):
        with pytest.raises(ValueError, match=name):
            GranianServer(slow_app, **{"host": HOST, "port": 0, **bad})  # type: ignore[arg-type]


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize(("max_threads", "bounded"), [(2, True), (None, False)])
def test_max_threads_bounds_the_threads_a_burst_starts(
    max_threads: int | None, bounded: bool, release: threading.Event
) -> None:
    """16 slow requests at once with threads 2: each waiting request holds a thread of its own
    by default (so slow senders cannot starve the rest); with max_threads 2 the process starts
    no more than 2, and the others wait their turn in granian's queue. All are answered."""
    with running_server(threads=2, max_threads=max_threads) as server:
        address = address_of(server)
        assert get(address, "/warm").status == 200
        before = _os_threads()
        peak = before
        with ThreadPoolExecutor(16) as pool:
            if bounded:  # a bound holds however the requests overlap
                futures = fire(pool, address, "/slow?ms=300", 16)
            else:  # all 16 held in the app at once, however slowly a loaded machine starts them
                futures = fire(pool, address, "/held", 16)
                wait_until(lambda: server.in_flight == 16, 15, message="16 requests in the app")
                peak = _os_threads()
                release.set()
            while not all(f.done() for f in futures):
                peak = max(peak, _os_threads())
                time.sleep(0.01)
            assert [f.result().status for f in futures] == [200] * 16
        started = peak - before - 16  # the client's own 16 threads are in this process too
        if bounded:
            assert started <= 2, f"{started} threads started with max_threads 2"
        else:
            assert started >= 8, f"only {started} threads started for 16 waiting requests"


def test_threads_parked_after_a_burst_come_back_for_stalled_bodies(
    release: threading.Event,
) -> None:
    """A burst of 12 leaves 12 threads started; all but spare_threads (2) then wait aside,
    out of granian's rotation. 11 bodies that stall then hold 11 threads: the parked ones
    must come back, or with max_threads 12 a probe finds no thread until the bodies time
    out (60 s)."""
    with running_server(threads=2, max_threads=12, spare_threads=2) as server:
        address = address_of(server)
        with ThreadPoolExecutor(12) as pool:
            burst = fire(pool, address, "/held", 12)
            wait_until(lambda: server.in_flight == 12, 15, message="12 requests in the app")
            release.set()
            assert [f.result().status for f in burst] == [200] * 12
        wait_until(lambda: server.threads == (12, 10), 5, message="10 of 12 threads parked")
        head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789"
        stalled = [socket.create_connection(address, timeout=5) for _ in range(11)]
        try:
            for sock in stalled:
                sock.sendall(head)
            wait_until(lambda: server.in_flight == 11, 5, message="11 bodies stalled")
            sent = time.monotonic()
            reply = get(address, "/probe", timeout=5)
            assert (reply.status, reply.body) == (200, b"done /probe")
            assert time.monotonic() - sent < 1.0
            assert server.threads[0] == 12  # served by threads parked before, no new one
        finally:
            for sock in stalled:
                sock.close()


def _established(port: int) -> int:
    """Connections the server side holds open on `port` (accepted, not yet closed)."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=5,
    ).stdout
    return len(out.splitlines())
