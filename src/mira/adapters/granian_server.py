"""granian HTTP engine adapter (the `Server` port): one granian worker in this process.

granian's Rust core (hyper on tokio) reads and writes every connection; Python threads run
only the WSGI app. Mira hosts granian's worker directly in its own process: in the single
process of `server.workers: 1`, and in each worker process of the supervisor's pool, so
Mira's supervisor (not granian's) owns signals, respawns, hang detection and the drain.
That goes through `granian._granian.WSGIWorker` and two helpers, granian's private names
(listed in `GRANIAN_PRIVATE`, pinned to the locked version by tests/unit/test_granian_pin.py);
granian's public `Server` runs its own process model and signal handlers.

What each stage of the drain does here:
- start_draining: every response from now on says `Connection: close`, so keep-alive clients
  leave after their next request;
- close_listener: new SYNs are dropped (refused at the client's retry), the connections already
  queued are accepted and served, then granian stops accepting and shuts each connection down
  gracefully (idle ones close, in-flight ones finish);
- wait_drained: until granian reports its last connection done, or the timeout.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import structlog

from mira.adapters import listener as listening
from mira.adapters.body_deadline import BodyDeadlines
from mira.adapters.listener import PortInUseError
from mira.adapters.request_limits import RequestRejected, read_body
from mira.adapters.thread_reserve import ThreadReserve, wait_out_of_python
from mira.adapters.web_json import error_payload
from mira.adapters.wsgi_context import pick_request_id

__all__ = ["GRANIAN_PRIVATE", "GranianServer", "PortInUseError"]

log = structlog.get_logger("mira.server")
GRANIAN_PRIVATE = (
    "granian._granian.WSGIWorker",
    "granian._granian.SocketHolder",
    "granian._granian.WorkerSignal",
    "granian._futures._new_cbscheduler",
    "granian._loops.loops",
)
#: How long close_listener waits for granian to accept what is queued before it stops anyway.
BACKLOG_TIMEOUT = 2.0
#: Python threads per process when server.max_threads is null (at most server.max_connections).
DEFAULT_MAX_THREADS = 256
#: Idle threads left in granian's rotation; more than that wait aside (thread_reserve.py).
SPARE_THREADS = 8
_THREAD_IDLE_SECONDS = 10 * 365 * 86400  # granian keeps its threads: ThreadReserve counts them
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_CLOSE = ("Connection", "close")


class _Response:
    """start_response for one request."""

    __slots__ = ("headers", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = int(status.split(" ", 1)[0])
        self.headers = headers
        return None


class GranianServer:
    """granian's HTTP core serving a WSGI app on a socket this process owns."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        host: str,
        port: int,
        threads: int = 32,
        max_threads: int | None = None,
        request_queue_size: int = 128,
        max_connections: int = 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        max_header_bytes: int = 65536,
        max_body_bytes: int = 1048576,
        listener: socket.socket | None = None,
        multiprocess: bool = False,
        spare_threads: int = SPARE_THREADS,
    ) -> None:
        for name, value in (
            ("threads", threads),
            ("max_threads", 1 if max_threads is None else max_threads),
            ("request_queue_size", request_queue_size),
            ("max_connections", max_connections),
            ("max_body_bytes", max_body_bytes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        # granian's Rust core logs "Started worker-1" and the like, in its own numbering
        logging.getLogger("_granian").setLevel(logging.WARNING)
        self._app = app
        self._host, self._port = host, port
        self._threads = threads
        # granian starts Python threads as requests come, up to this: a request waiting for its
        # body holds one, so there are many more than `threads`; each request wakes the thread
        # idle longest, so all but `spare_threads` idle ones wait aside (docs/decisions/0001)
        default_pool = min(DEFAULT_MAX_THREADS, max_connections)
        self._pool = max(threads, max_threads if max_threads is not None else default_pool)
        self._reserve = ThreadReserve(spare_threads)
        # `threads` requests run the app at once; a request takes its turn only once its body
        # is in, so slow senders cannot hold every turn (each waits on a thread of its own)
        self._turns: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(threads):
            self._turns.put(None)
        self._max_body = max_body_bytes
        self._deadlines = BodyDeadlines(body_timeout)
        self._backlog = request_queue_size
        self._max_connections = max_connections
        self._header_timeout_ms = max(1, int(header_timeout * 1000))
        # hyper answers 431 itself to a header block over its read buffer; Mira's app checks
        # server.max_header_bytes exactly (a JSON 431), the buffer only bounds the memory.
        self._buffer = max(8192, max_header_bytes + 8192)
        self._sock = listener
        self._base = {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": "mira",
            "wsgi.errors": sys.stderr,
            "wsgi.input_terminated": True,  # chunked bodies are readable (Werkzeug needs this)
            "wsgi.multiprocess": multiprocess,
            "wsgi.multithread": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        self._lock = threading.Lock()  # the listener's life: serve, close
        self._draining = False
        self._signal: Any = None
        self._signal_ready = threading.Event()  # serve_forever has set up the engine's stop
        self._closed = False
        self._finished = threading.Event()
        self._bound: tuple[str, int] | None = None

    # -- Server port -----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests the app is handling now."""
        return self._reserve.busy

    @property
    def pending(self) -> int:
        return self._reserve.busy

    @property
    def threads(self) -> tuple[int, int]:
        """The engine's Python threads that have served a request, and how many of them are
        parked (waiting aside, out of granian's rotation)."""
        return self._reserve.seen, self._reserve.parked

    @property
    def idle_connections(self) -> int:
        """1 while granian, told to stop, still has connections closing, else 0 (it closes
        idle keep-alive connections itself and does not count them)."""
        return int(self._closed and not self._finished.is_set())

    @property
    def bound_address(self) -> tuple[str, int] | None:
        return self._bound

    def bind(self) -> tuple[str, int]:
        if self._sock is None:
            self._sock = listening.listen(self._host, self._port, self._backlog)
        host, port = self._sock.getsockname()[:2]
        self._bound = (str(host), int(port))
        log.info(
            "server_listening",
            host=self._bound[0],
            port=self._bound[1],
            threads=self._threads,
            max_threads=self._pool,
            backlog=self._backlog,
            engine="granian",
        )
        return self._bound

    def serve_forever(self) -> None:
        """Serve until the listener closes and the last connection is done; own thread."""
        # granian's stubs lag behind its extension module: its private names are used untyped
        core: Any = importlib.import_module("granian._granian")
        futures: Any = importlib.import_module("granian._futures")
        loops: Any = importlib.import_module("granian._loops").loops
        from granian.http import HTTP1Settings

        if self._sock is None:
            raise RuntimeError("GranianServer.bind() must succeed before serve_forever()")
        with self._lock:
            if self._closed:
                return
            self._signal = core.WorkerSignal()
            self._signal_ready.set()
        self._signal.add_cb(self._finished.set)  # granian calls it after its last connection
        self._deadlines.start(int(self._sock.getsockname()[1]))
        holder = core.SocketHolder(os.dup(self._sock.fileno()), False, self._backlog)
        worker = core.WSGIWorker(
            1,
            (None, holder),
            None,  # no IPC: Mira's own metrics
            1,  # runtime threads (tokio)
            512,  # runtime blocking threads (tokio's, for file I/O)
            self._pool,  # Python threads, started as requests come (`threads` run the app)
            # seconds an idle Python thread is kept: a day, so threads are not recycled; each
            # thread's request tallies (RequestMetrics) are kept for good
            _THREAD_IDLE_SECONDS,
            self._max_connections,
            "1",  # HTTP/1.1 only
            HTTP1Settings(
                header_read_timeout=self._header_timeout_ms,
                keep_alive=True,
                max_buffer_size=self._buffer,
            ),
            None,
            None,  # no static files
            *(False, None, None, None, "tls1.3", None, [], False),  # no TLS
            (None, None),  # no granian metrics
        )
        loop = loops.get("auto")
        scheduler = futures._new_cbscheduler(loop, self._call, impl_asyncio=True)
        worker.serve_mtr(scheduler, loop, self._signal)  # granian's own mode for WSGI
        self._finished.wait()
        self._deadlines.stop()
        log.info("server_loop_exited")

    def start_draining(self) -> None:
        if not self._draining:
            self._draining = True
            log.info("server_draining", in_flight=self.in_flight)

    def close_listener(self) -> None:
        """Later connects are refused; queued ones are accepted and served; then granian
        stops accepting and closes every connection as soon as its request is done."""
        sock = self._sock
        if sock is not None and not self._signal_ready.is_set() and listening.queued(sock):
            # serve_forever is starting on its thread (a stop signal right after start-up):
            # what is queued is served if it starts in time, not reset by the close
            self._signal_ready.wait(BACKLOG_TIMEOUT)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._draining = True
            started = time.monotonic()
            sock = self._sock
            left = 0
            if sock is not None and self._signal is not None:
                listening.refuse_new_handshakes(sock)
                left = listening.wait_backlog_taken(sock, BACKLOG_TIMEOUT)
            if self._signal is not None:
                self._signal.set()
            else:
                self._finished.set()
            if sock is not None:
                sock.close()
        log.info(
            "listener_closed",
            left_in_backlog=left,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def wait_drained(self, timeout: float) -> int:
        """Wait up to timeout for in-flight requests and open connections; how many requests
        remain."""
        if not self._closed:  # not called in the lifecycle's order: just wait for requests
            deadline = time.monotonic() + timeout
            while self.in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
        elif self._finished.wait(timeout):
            log.info("server_drained")
            return 0
        if self.in_flight:
            log.warning("drain_deadline_passed", abandoned=self.in_flight, timeout=timeout)
        return self.in_flight

    def stop(self, timeout: float = 5.0) -> None:
        was_finished = self._finished.is_set()
        self.close_listener()
        if self._finished.wait(timeout):
            if not was_finished:
                log.info("server_stopped")
        else:
            log.warning("server_stop_timed_out", timeout=timeout, abandoned=self.in_flight)
        # parked threads go back to granian now and are waited for, while the interpreter
        # still runs: a thread still in Python code as it shuts down could abort the process
        released = self._reserve.release_all()
        if released:
            left = wait_out_of_python(released)
            log.info("server_threads_released", released=len(released), still_leaving=left)

    # -- the request path ------------------------------------------------------------------
    def _call(self, proto: Any, scope: dict[str, Any]) -> int:
        """One request, on one of granian's Python threads."""
        self._reserve.enter()
        parkable = True  # no body left unread: this thread may wait aside afterwards
        try:
            response = _Response()
            environ = self._base | scope
            try:
                if "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
                    parkable = self._take_body(proto, environ)
                self._turns.get()
                try:
                    result = self._app(environ, response)
                    try:
                        body = b"".join(result)
                    finally:
                        close = getattr(result, "close", None)
                        if close is not None:
                            close()
                finally:
                    self._turns.put(None)
            except Exception:  # the app's own handlers failed: Mira's JSON 500 all the same
                request_id = str(environ.get("mira.request_id") or pick_request_id(environ))
                log.exception("Unhandled error while handling request", correlation_id=request_id)
                response.status = 500
                response.headers = [
                    ("Content-Type", "application/json"),
                    ("X-Request-ID", request_id),
                ]
                body = orjson.dumps(error_payload("internal server error", request_id))
            headers = response.headers
            if self._draining:
                headers = [*headers, _CLOSE]
            proto.response_bytes(response.status, headers, body)
            return response.status
        finally:
            self._reserve.leave(parkable)

    def _take_body(self, proto: Any, environ: dict[str, Any]) -> bool:
        """Read the body before the request takes a turn, within server.body_timeout; the app
        reads it from memory. A body over max_body_bytes or too slow leaves its verdict in
        `mira.rejected` (the app answers it: Mira's JSON 413; the watchdog answered 408).
        Whether the body was read to its end."""
        given = environ.get("CONTENT_LENGTH")
        length: int | None = None
        if given is not None:
            try:
                length = int(given)
            except ValueError:
                return False  # the app's framework answers it
            if length <= 0:
                return True  # nothing to read
            if length > self._max_body:
                return False  # the app's 413 without reading
        environ["mira.started"] = time.perf_counter()  # the request's duration counts the body
        environ["mira.request_id"] = pick_request_id(environ)
        reading = self._deadlines.begin(proto, environ)
        data = b""
        whole = False
        try:
            data = read_body(environ["wsgi.input"], self._max_body, length)
            whole = True
        except RequestRejected as exc:
            environ["mira.rejected"] = exc
        finally:
            in_time = self._deadlines.end(reading)
        if not in_time:
            environ["mira.rejected"] = RequestRejected(408, self._deadlines.message)
        environ["wsgi.input"] = io.BytesIO(data)
        return whole and in_time
