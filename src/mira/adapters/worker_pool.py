"""N worker processes on one listening address, driven by the supervisor (the `Server` port).

The supervisor binds one socket per worker on that address (SO_REUSEPORT: the kernel spreads
new connections over them) and starts each worker as a fresh interpreter
(`python -m mira.entrypoints.worker`) that inherits its socket and one end of a control
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
from typing import Any

import structlog

from mira.adapters import listener as listening
from mira.adapters.request_metrics import add_rows, decode_rows
from mira.adapters.worker_channel import Channel
from mira.adapters.worker_link import WorkerLink

log = structlog.get_logger("mira.supervisor")
PREPARE_TIMEOUT = 5.0
START_TIMEOUT = 60.0
#: After the last request, how long the workers' connections get to close themselves.
IDLE_GRACE = 1.0
_TICK = 0.5
Snapshot = dict[str, Any]


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
        self._workers: dict[int, WorkerLink] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # rollouts and respawns, one at a time
        self._committed: Snapshot | None = None
        #: one listening socket per worker index (SO_REUSEPORT), kept here across respawns:
        #: connections queued on a dead worker's socket wait for its replacement; None while
        #: a replacement fails, so that new connections go to the other workers
        self._listeners: list[socket.socket | None] = []
        self._address: tuple[str, int] = (host, port)
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
        group = listening.listen_group(self._host, self._port, self._backlog, self.count)
        for sock in group:
            sock.set_inheritable(True)
        self._listeners = list(group)
        host, port = group[0].getsockname()[:2]
        self._address = (str(host), int(port))
        self._committed = self._snapshot()
        self._committed_id = next(self._ids)
        self._publish(self._committed_id)
        with self._lock:
            for index in range(self.count):
                self._spawn(index)
        log.info("workers_started", workers=self.count, host=host, port=port)
        return self._address

    def serve_forever(self) -> None:
        """Watch the workers: replace one that died or stopped answering; tick the others."""
        while not self._stopping.wait(_TICK):
            status = self._bus_status()
            for worker in list(self._workers.values()):
                self._check(worker)
                worker.tell({"op": "tick", "stalled": status})

    def start_draining(self) -> None:
        self._draining = True
        for worker in list(self._workers.values()):
            worker.tell({"op": "drain"})

    def close_listener(self) -> None:
        """New connections refused (not reset); every worker serves what is queued on its
        socket, then closes its copy; the supervisor's copies close last."""
        self._closing = True
        listeners = [sock for sock in self._listeners if sock is not None]
        self._listeners = []
        if not listeners:
            return
        for listener in listeners:
            listening.refuse_new_handshakes(listener)
        replies = [w.ask({"op": "close"}) for w in self._live()]
        for reply in replies:
            WorkerLink.wait(reply, PREPARE_TIMEOUT)
        for listener in listeners:
            listener.close()

    def wait_drained(self, timeout: float) -> int:
        """In-flight requests in every worker, then idle keep-alive connections (as one
        worker's engine does: see GranianServer.idle_connections); how many requests remain."""
        deadline = time.monotonic() + timeout
        idle_until: float | None = None
        quiet = 0  # consecutive answers with nothing pending (a request between two polls)
        while time.monotonic() < deadline:
            pending, idle = self._status()
            if pending:
                idle_until, quiet = None, 0
            elif not idle:
                quiet += 1
                if quiet >= 3:
                    return 0
            else:
                quiet = 0
                idle_until = idle_until or min(deadline, time.monotonic() + IDLE_GRACE)
                if time.monotonic() >= idle_until:
                    return 0
            time.sleep(0.02)
        return self._status()[0]

    def _status(self) -> tuple[int, int]:
        replies = [(w, w.ask({"op": "status"})) for w in self._live()]
        pending = idle = 0
        for worker, reply in replies:
            answer = WorkerLink.wait(reply, 1.0)
            pending += int(answer.get("pending", 0)) if answer else worker.in_flight
            idle += int(answer.get("idle", 0)) if answer else 0
        return pending, idle

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._closing = True
        for worker in list(self._workers.values()):
            worker.tell({"op": "stop"})
        deadline = time.monotonic() + timeout
        for worker in list(self._workers.values()):
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker_killed_at_stop", worker=worker.index, pid=worker.proc.pid)
                worker.proc.kill()
                worker.proc.wait(5)
            worker.channel.close()
        for listener in self._listeners:
            if listener is not None:
                listener.close()
        self._listeners = []
        with contextlib.suppress(OSError, ValueError):
            self._switch.close()
            os.close(self._switch_fd)

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self._live())

    @property
    def threads(self) -> tuple[int, int]:
        """Engine threads over the live workers, as last heard: started, parked."""
        live = [w.threads for w in self._live()]
        return sum(t[0] for t in live), sum(t[1] for t in live)

    # -- snapshots -------------------------------------------------------------------------
    def rollout(self, snapshot: Snapshot) -> str | None:
        """Prepare on every live worker, then commit on every one; None, or why it aborted."""
        if self._stopping.is_set():
            return None
        with self._lock:
            sid = next(self._ids)
            workers = self._live()
            asked = [
                (w, w.ask({"op": "prepare", "id": sid, "snapshot": snapshot})) for w in workers
            ]
            failures = []
            for worker, reply in asked:
                answer = WorkerLink.wait(reply, PREPARE_TIMEOUT)
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
                    worker.tell({"op": "abort", "id": sid})
                return "; ".join(failures)
            self._committed, self._committed_id = snapshot, sid
            self._publish(sid)  # every worker serves it from its next request on
            for worker in workers:
                worker.tell({"op": "commit", "id": sid})
            return None

    def _publish(self, sid: int) -> None:
        struct.pack_into("Q", self._switch, 0, sid)

    # -- metrics ---------------------------------------------------------------------------
    def aggregate_rows(self) -> dict[Any, list[float]]:
        """Every worker's request metrics now, plus those of workers since replaced."""
        replies = [(w, w.ask({"op": "rows"})) for w in self._live()]
        for worker, reply in replies:
            answer = WorkerLink.wait(reply, 1.0)
            if answer is not None:
                worker.rows = decode_rows(answer.get("rows", []))
        return add_rows([self._retired, *(w.rows for w in self._workers.values() if not w.gone)])

    def _on_request(self, worker: WorkerLink, message: dict[str, Any]) -> None:
        """A worker asks: for now only for /metrics (the whole service's)."""
        if message.get("op") != "metrics":
            return
        try:
            text = self._render_metrics().decode()
        except Exception as exc:
            text = f"# mira: metrics could not be gathered: {type(exc).__name__}\n"
        worker.tell({"reply_to": message.get("rid", 0), "text": text})

    # -- workers ---------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        assert self._listeners and self._committed is not None
        parent, child = socket.socketpair()
        child.set_inheritable(True)
        os.set_inheritable(self._switch_fd, True)
        sock = self._listeners[index]
        if sock is None:  # the last replacement failed and its socket was closed
            # bound, not listening: it takes connections once the worker serves on it
            sock = listening.join_group(*self._address, self._backlog, listening=False)
            sock.set_inheritable(True)
            self._listeners[index] = sock
        fds = (sock.fileno(), child.fileno(), self._switch_fd)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mira.entrypoints.worker", str(index), *map(str, fds)],
            pass_fds=fds,
            close_fds=True,
        )
        child.close()
        worker = WorkerLink(index, proc, Channel(parent), self._on_request)
        self._workers[index] = worker
        sid = self._committed_id  # a new worker starts on the committed snapshot
        prepared = WorkerLink.wait(
            worker.ask({"op": "prepare", "id": sid, "snapshot": self._committed}), START_TIMEOUT
        )
        if prepared is None or not prepared.get("ok"):
            why = prepared.get("reason") if prepared else "no answer"
            raise OSError(f"worker {index} could not start: {why}")
        worker.tell({"op": "commit", "id": sid, "first": True})
        if self._draining:
            worker.tell({"op": "drain"})
        log.info("worker_started", worker=index, pid=proc.pid)

    def _check(self, worker: WorkerLink) -> None:
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
        self._retired = add_rows([self._retired, worker.rows])
        worker.close()
        with self._lock:
            try:
                self._spawn(worker.index)
            except OSError:
                log.exception("Worker replacement failed; trying again", worker=worker.index)
                self._drop_listener(worker.index)

    def _drop_listener(self, index: int) -> None:
        """Close a worker's socket while it has no worker: the kernel then spreads new
        connections over the others' (those queued on it are reset: nothing would serve them).
        The next attempt binds a fresh socket that takes connections only once it serves."""
        sock = self._listeners[index] if index < len(self._listeners) else None
        if sock is not None:
            self._listeners[index] = None
            sock.close()

    def _live(self) -> list[WorkerLink]:
        return [w for w in self._workers.values() if not w.gone]


def cpu_count() -> int:
    """The CPUs this process may run on (`server.workers: "auto"`)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
