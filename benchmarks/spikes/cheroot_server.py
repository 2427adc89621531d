"""cheroot HTTP server adapter: bind, serve, and a deadline-bounded graceful drain.

Mira's engine until issue 12 moved it to granian (docs/decisions/0001-http-engine.md); kept
here, unshipped, for the benchmarks' "bare Flask, cheroot" peer and the drain spikes.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import structlog
from cheroot import wsgi

from mira.adapters.listener import HANDSHAKE_GRACE, PortInUseError, refuse_new_handshakes

__all__ = ["CherootServer", "PortInUseError", "WSGIApplication"]

log = structlog.get_logger("mira.server")

# The selector loop's select() timeout: bounds how long close_listener() waits for it to pause.
_LOOP_INTERVAL = 0.1
_POLL = 0.01
_QUIET_POLLS = 3
#: After the last request finished, how long idle keep-alive connections get to close
#: themselves before the stop closes them.
IDLE_GRACE = 1.0


class _InFlightApp:
    """Counts requests from the app call until their response iterable is closed."""

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.count += 1
        try:
            result = self._app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _TrackedResponse(result, self._done)

    def _done(self) -> None:
        with self._lock:
            self.count -= 1


class _TrackedResponse:
    """Passes a response through and reports once when the server closes it."""

    def __init__(self, result: Iterable[bytes], on_close: Any) -> None:
        self._result = result
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class _Server(wsgi.Server):
    """cheroot server that closes connections while draining and logs through structlog."""

    draining = False
    _connections: Any  # cheroot's ConnectionManager (private; created by prepare())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bind_errors: list[OSError] = []
        #: a listening socket made by the supervisor and inherited by this worker process
        self.inherited: socket.socket | None = None

    @property
    def can_add_keepalive_connection(self) -> bool:
        # False makes cheroot itself send `Connection: close` and close the socket after the
        # response; a header set by the app alone would leave the connection open.
        return not self.draining and bool(super().can_add_keepalive_connection)

    def bind(self, family: int, type: int, proto: int = 0) -> Any:
        if self.inherited is not None:
            self.socket = self.inherited
            self.bind_addr = self.inherited.getsockname()[:2]
            return self.socket
        try:
            return super().bind(family, type, proto)
        except OSError as exc:
            self.bind_errors.append(exc)
            raise

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        log.log(level, "cheroot_message", detail=str(msg), exc_info=traceback)


class CherootServer:
    """A cheroot WSGI server whose shutdown drops no accepted request."""

    def __init__(
        self,
        app: WSGIApplication,
        *,
        host: str,
        port: int,
        threads: int = 32,
        request_queue_size: int = 128,
        server_name: str = "mira",
        listener: socket.socket | None = None,
    ) -> None:
        _check_positive("threads", threads)
        _check_positive("request_queue_size", request_queue_size)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        self._host, self._port = host, port
        self._app = _InFlightApp(app)
        self._server = _Server(
            (host, port),
            self._app,
            numthreads=threads,
            max=threads,
            server_name=server_name,
            request_queue_size=request_queue_size,
        )
        self._server.expiration_interval = _LOOP_INTERVAL
        self._server.inherited = listener
        self._bound: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self._listener_closed = False
        self._stopped = False

    @property
    def in_flight(self) -> int:
        """Requests the app is handling now (called, response not yet closed)."""
        return self._app.count

    @property
    def bound_address(self) -> tuple[str, int] | None:
        return self._bound

    def bind(self) -> tuple[str, int]:
        """Bind and listen, start the worker threads; return the real (host, port)."""
        try:
            self._server.prepare()
        except OSError as exc:
            where = f"{self._host}:{self._port}"
            if any(e.errno == errno.EADDRINUSE for e in self._server.bind_errors):
                raise PortInUseError(
                    errno.EADDRINUSE, f"cannot listen on {where}: address already in use"
                ) from exc
            raise OSError(f"cannot listen on {where}: {exc}") from exc
        host, port = self._server.bind_addr[:2]
        self._bound = (str(host), int(port))
        log.info(
            "server_listening",
            host=self._bound[0],
            port=self._bound[1],
            threads=self._server.requests.min,
            backlog=self._server.request_queue_size,
        )
        return self._bound

    def serve_forever(self) -> None:
        """Dispatch connections to the workers until stop(); run it in its own thread."""
        server = self._server
        if not server.ready:
            raise RuntimeError("CherootServer.bind() must succeed before serve_forever()")
        while server.ready:
            try:
                server._connections.run(server.expiration_interval)
            except Exception:
                log.exception("server_loop_error")
                time.sleep(_LOOP_INTERVAL)  # avoid a hot error loop
            self._resume.wait()  # close_listener() pauses the loop while it owns the listener
        log.info("server_loop_exited")

    def start_draining(self) -> None:
        """From now on every response carries `Connection: close` and its connection closes."""
        if not self._server.draining:
            self._server.draining = True
            log.info("server_draining", in_flight=self.in_flight)

    def close_listener(self) -> None:
        """Stop accepting: later connects are refused; every queued connection is served."""
        with self._lock:
            server = self._server
            if self._listener_closed or not server.ready:
                return
            self._listener_closed = True
            started = time.monotonic()
            server.draining = True
            manager = server._connections
            self._resume.clear()
            manager.stop()  # returns once the selector loop has left run()
            try:
                taken = self._take_backlog(manager)
            finally:
                manager._stop_requested = False
                self._resume.set()
        log.info(
            "listener_closed",
            taken_from_backlog=taken,
            queued=self._queued(),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _take_backlog(self, manager: Any) -> int:
        """Accept every handshake already completed, hand it to the workers, then close."""
        server = self._server
        sock = server.socket
        taken = 0
        try:
            refuse_new_handshakes(sock)
            time.sleep(HANDSHAKE_GRACE)  # handshakes under way land in the backlog
            sock.setblocking(False)
            while (conn := manager._from_server_socket(sock)) is not None:
                server.process_conn(conn)
                taken += 1
        finally:
            manager._selector.unregister(sock.fileno())
            sock.close()
            server.socket = None
        return taken

    def wait_drained(self, timeout: float) -> int:
        """Wait up to timeout for queued and running requests; return how many remain.

        Then give keep-alive connections up to IDLE_GRACE to close themselves: since the drain
        began every response says `Connection: close`, so an active client's connection ends
        after its next request. Closing one that a request is arriving on resets it (unread
        data makes close send RST), which is what a stop right after the drain did.
        """
        deadline = time.monotonic() + timeout
        idle_until: float | None = None
        quiet = 0  # consecutive polls with nothing pending: a worker thread that has just taken
        # a connection off the queue is briefly counted neither queued nor busy
        while time.monotonic() < deadline:
            if pending := self._pending():
                idle_until, quiet = None, 0
            elif not self.idle_connections:
                quiet += 1
                if quiet >= _QUIET_POLLS:
                    break
            else:
                quiet = 0
                idle_until = idle_until or min(deadline, time.monotonic() + IDLE_GRACE)
                if time.monotonic() >= idle_until:
                    break
            time.sleep(_POLL)
        pending = self._pending()
        if pending:
            log.warning("drain_deadline_passed", abandoned=pending, timeout=timeout)
        else:
            log.info("server_drained")
        return pending

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and all connections; return within about timeout seconds."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._server.ready:
            self.close_listener()
        self._server.shutdown_timeout = max(timeout * 0.8, 0.0)
        stopper = threading.Thread(target=self._stop_cheroot, name="mira-server-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("server_stop_timed_out", timeout=timeout, abandoned=self.in_flight)
        else:
            log.info("server_stopped")

    def _stop_cheroot(self) -> None:
        try:
            self._server.stop()
        except Exception:
            log.exception("server_stop_failed")

    def _queued(self) -> int:
        return int(self._server.requests.qsize)

    @property
    def idle_connections(self) -> int:
        """Keep-alive connections waiting for their next request (the listener closed)."""
        if not self._listener_closed or not self._server.ready:
            return 0
        return len(self._server._connections._selector)

    @property
    def pending(self) -> int:
        """Requests not yet answered: queued for a worker thread, being read or in the app."""
        return self._pending()

    def _pending(self) -> int:
        """Connections a worker holds (reading or in the app) plus those queued for a worker."""
        pool = self._server.requests
        if self._stopped:
            return self.in_flight
        return max(int(pool.min) - int(pool.idle), self.in_flight) + self._queued()


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
