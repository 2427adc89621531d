"""N worker processes on one listening socket, driven by the supervisor (the `Server` port).

The supervisor binds the socket and starts each worker as a fresh interpreter
(`python -m mira.entrypoints.worker`) that inherits the socket and one end of a control
socketpair. Workers serve HTTP only; what they serve from is the snapshot committed to them
here (prepare on every worker, then commit on every worker, or abort on every worker).
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import structlog

from mira.adapters.cheroot_server import PortInUseError, refuse_new_handshakes
from mira.adapters.request_metrics import add_rows, decode_rows
from mira.adapters.worker_channel import Channel, ChannelClosed

log = structlog.get_logger("mira.supervisor")
PREPARE_TIMEOUT = 5.0
START_TIMEOUT = 60.0
_TICK = 0.5
Snapshot = dict[str, Any]


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    channel: Channel
    pending: dict[int, Future[dict[str, Any]]] = field(default_factory=dict)
    last_heard: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    gone: bool = False
    rows: dict[Any, list[float]] = field(default_factory=dict)  # its request metrics, last seen


class WorkerPool:
    """The supervisor's view of its workers: spawn, commit snapshots, drain, replace."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        backlog: int,
        count: int,
        worker_timeout: float,
        snapshot: Callable[[], Snapshot],
        bus_status: Callable[[], str | None] = lambda: None,
        render_metrics: Callable[[], bytes] = lambda: b"",
    ) -> None:
        self._host, self._port, self._backlog = host, port, backlog
        self.count = count
        self._worker_timeout = worker_timeout
        self._snapshot = snapshot
        self._bus_status = bus_status
        self._render_metrics = render_metrics
        #: request metrics of replaced workers: the sum never goes backwards
        self._retired: dict[Any, list[float]] = {}
        self._workers: dict[int, _Worker] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # rollouts and respawns, one at a time
        self._committed: Snapshot | None = None
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._closing = False
        self._draining = False
        # The commit switch: one shared 8-byte word holding the committed snapshot's id. Every
        # worker reads it at the start of each request, so all switch at the same instant.
        self._switch_fd = os.memfd_create("mira-committed-snapshot", 0)
        os.ftruncate(self._switch_fd, 8)
        self._switch = mmap.mmap(self._switch_fd, 8)
        self._committed_id = 0

    # -- Server port -----------------------------------------------------------------------
    def bind(self) -> tuple[str, int]:
        where = f"{self._host}:{self._port}"
        try:
            sock = socket.create_server((self._host, self._port), backlog=self._backlog)
        except OSError as exc:
            if exc.errno == 98:
                raise PortInUseError(
                    exc.errno, f"cannot listen on {where}: address in use"
                ) from None
            raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        sock.set_inheritable(True)
        self._listener = sock
        self._committed = self._snapshot()
        self._committed_id = next(self._ids)
        self._publish(self._committed_id)
        with self._lock:
            for index in range(self.count):
                self._spawn(index)
        host, port = sock.getsockname()[:2]
        log.info("workers_started", workers=self.count, host=host, port=port)
        return str(host), int(port)

    def serve_forever(self) -> None:
        """Watch the workers: replace one that died or stopped answering; tick the others."""
        while not self._stopping.wait(_TICK):
            status = self._bus_status()
            for worker in list(self._workers.values()):
                self._check(worker)
                self._tell(worker, {"op": "tick", "stalled": status})

    def start_draining(self) -> None:
        self._draining = True
        for worker in list(self._workers.values()):
            self._tell(worker, {"op": "drain"})

    def close_listener(self) -> None:
        """New connections refused (not reset); every worker serves what is queued, then
        closes its copy of the socket; the supervisor's copy closes last."""
        self._closing = True
        listener = self._listener
        if listener is None:
            return
        refuse_new_handshakes(listener)
        replies = [(w, self._ask(w, {"op": "close"})) for w in self._live()]
        for worker, reply in replies:
            self._wait(worker, reply, PREPARE_TIMEOUT)
        listener.close()
        self._listener = None

    def wait_drained(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pending = self.in_flight_now()
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(0.02)

    def in_flight_now(self) -> int:
        replies = [(w, self._ask(w, {"op": "status"})) for w in self._live()]
        total = 0
        for worker, reply in replies:
            answer = self._wait(worker, reply, 1.0)
            total += int(answer.get("pending", 0)) if answer else worker.in_flight
        return total

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._closing = True
        for worker in list(self._workers.values()):
            self._tell(worker, {"op": "stop"})
        deadline = time.monotonic() + timeout
        for worker in list(self._workers.values()):
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker_killed_at_stop", worker=worker.index, pid=worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait(5)
            worker.channel.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(OSError, ValueError):
            self._switch.close()
            os.close(self._switch_fd)

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self._live())

    # -- snapshots -------------------------------------------------------------------------
    def rollout(self, snapshot: Snapshot) -> str | None:
        """Prepare on every live worker, then commit on every one; None, or why it aborted."""
        if self._stopping.is_set():
            return None
        with self._lock:
            sid = next(self._ids)
            workers = self._live()
            asked = [
                (w, self._ask(w, {"op": "prepare", "id": sid, "snapshot": snapshot}))
                for w in workers
            ]
            failures = []
            for worker, reply in asked:
                answer = self._wait(worker, reply, PREPARE_TIMEOUT)
                if worker.gone:
                    continue  # replaced from the committed snapshot anyway
                if answer is None:
                    failures.append(
                        f"worker {worker.index} did not prepare within {PREPARE_TIMEOUT:g}s"
                    )
                elif not answer.get("ok"):
                    failures.append(f"worker {worker.index}: {answer.get('reason')}")
            if failures:
                for worker in workers:
                    self._tell(worker, {"op": "abort", "id": sid})
                return "; ".join(failures)
            self._committed, self._committed_id = snapshot, sid
            self._publish(sid)  # every worker serves it from its next request on
            for worker in workers:
                self._tell(worker, {"op": "commit", "id": sid})
            return None

    def _publish(self, sid: int) -> None:
        struct.pack_into("Q", self._switch, 0, sid)

    # -- metrics ---------------------------------------------------------------------------
    def aggregate_rows(self) -> dict[Any, list[float]]:
        """Every worker's request metrics now, plus those of workers since replaced."""
        replies = [(w, self._ask(w, {"op": "rows"})) for w in self._live()]
        for worker, reply in replies:
            answer = self._wait(worker, reply, 1.0)
            if answer is not None:
                worker.rows = decode_rows(answer.get("rows", []))
        return add_rows([self._retired, *(w.rows for w in self._workers.values() if not w.gone)])

    def _answer_metrics(self, worker: _Worker, message: dict[str, Any]) -> None:
        try:
            text = self._render_metrics().decode()
        except Exception as exc:
            text = f"# mira: metrics could not be gathered: {type(exc).__name__}\n"
        self._tell(worker, {"reply_to": message.get("rid", 0), "text": text})

    # -- workers ---------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        assert self._listener is not None and self._committed is not None
        parent, child = socket.socketpair()
        child.set_inheritable(True)
        os.set_inheritable(self._switch_fd, True)
        fds = (self._listener.fileno(), child.fileno(), self._switch_fd)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mira.entrypoints.worker", str(index), *map(str, fds)],
            pass_fds=fds,
            close_fds=True,
        )
        child.close()
        worker = _Worker(index, proc, Channel(parent))
        self._workers[index] = worker
        threading.Thread(
            target=self._read, args=(worker,), name=f"mira-worker-{index}", daemon=True
        ).start()
        sid = self._committed_id  # a new worker starts on the committed snapshot
        prepared = self._wait(
            worker,
            self._ask(worker, {"op": "prepare", "id": sid, "snapshot": self._committed}),
            START_TIMEOUT,
        )
        if prepared is None or not prepared.get("ok"):
            why = prepared.get("reason") if prepared else "no answer"
            raise OSError(f"worker {index} could not start: {why}")
        self._tell(worker, {"op": "commit", "id": sid, "first": True})
        if self._draining:
            self._tell(worker, {"op": "drain"})
        log.info("worker_started", worker=index, pid=proc.pid)

    def _check(self, worker: _Worker) -> None:
        if self._closing:
            return
        code = worker.proc.poll()
        silent = time.monotonic() - worker.last_heard
        if code is None and silent <= self._worker_timeout:
            return
        if code is None:
            log.error(
                "Worker stopped answering; replacing it",
                worker=worker.index,
                pid=worker.proc.pid,
                silent_seconds=round(silent, 1),
                worker_timeout=self._worker_timeout,
            )
            worker.proc.kill()
            worker.proc.wait(5)
        else:
            log.error(
                "Worker exited; replacing it",
                worker=worker.index,
                pid=worker.proc.pid,
                exit_code=code,
            )
        worker.gone = True
        self._retired = add_rows([self._retired, worker.rows])
        worker.channel.close()
        with self._lock:
            try:
                self._spawn(worker.index)
            except OSError:
                log.exception("Worker replacement failed; trying again", worker=worker.index)

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers.values() if not w.gone]

    def _read(self, worker: _Worker) -> None:
        with contextlib.suppress(ChannelClosed):
            while True:
                message = worker.channel.recv()
                worker.last_heard = time.monotonic()
                op = message.get("op")
                if op == "heartbeat":
                    worker.in_flight = int(message.get("in_flight", 0))
                    worker.rows = decode_rows(message.get("rows", []))
                    continue
                if op == "metrics":  # a worker serving /metrics asks for the whole service's
                    threading.Thread(
                        target=self._answer_metrics, args=(worker, message), daemon=True
                    ).start()
                    continue
                reply = worker.pending.pop(int(message.get("reply_to", 0)), None)
                if reply is not None:
                    reply.set_result(message)
        for reply in list(worker.pending.values()):
            reply.cancel()

    def _ask(self, worker: _Worker, message: dict[str, Any]) -> Future[dict[str, Any]]:
        rid = next(self._ids)
        reply: Future[dict[str, Any]] = Future()
        worker.pending[rid] = reply
        if not self._tell(worker, {**message, "rid": rid}):
            reply.cancel()
        return reply

    def _tell(self, worker: _Worker, message: dict[str, Any]) -> bool:
        try:
            worker.channel.send(message)
            return True
        except ChannelClosed:
            return False

    @staticmethod
    def _wait(
        worker: _Worker, reply: Future[dict[str, Any]], timeout: float
    ) -> dict[str, Any] | None:
        try:
            return reply.result(timeout)
        except (FutureTimeout, Exception):
            return None


def cpu_count() -> int:
    """The CPUs this process may run on (`server.workers: "auto"`)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
