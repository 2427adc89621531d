"""`python -m mira.entrypoints.worker INDEX LISTEN_FD CONTROL_FD`: one worker process.

Started by the supervisor (`mira.adapters.worker_pool`), never by hand. A worker serves HTTP
on the inherited listening socket from the snapshot the supervisor commits to it; it fetches
nothing, watches nothing and never acts on a stop signal of its own accord (a SIGTERM to the
whole process group must not skip the supervisor's drain).
"""

from __future__ import annotations

import contextvars
import itertools
import mmap
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import structlog
from dependency_injector import providers

from mira.adapters.granian_server import GranianServer
from mira.adapters.request_metrics import encode_rows
from mira.adapters.worker_channel import Channel, ChannelClosed
from mira.container import Container, engine_settings
from mira.domain.config.model import LoggingSettings
from mira.domain.config.secret_refs import SecretRef
from mira.domain.secret_value import SecretValue
from mira.domain.state import RuntimeState
from mira.service_layer.snapshots import read_snapshot

HEARTBEAT = 1.0
log = structlog.get_logger("mira.worker")
#: the snapshot the request being handled on this thread started with
_PINNED: contextvars.ContextVar[RuntimeState | None] = contextvars.ContextVar(
    "mira_pinned_snapshot", default=None
)
_Prepared = tuple[RuntimeState, dict[SecretRef, SecretValue]]


class WorkerView:
    """What the worker's web app reads instead of a bus: the committed snapshot's state.

    Prepared snapshots wait here by id; the supervisor's commit switch (one shared word) says
    which one is committed, and the first read after it changed installs that one. Every
    worker reads the same word at the start of each request, so none serves the old snapshot
    once any serves the new one.
    """

    def __init__(self, switch: mmap.mmap, install: Callable[[_Prepared], None]) -> None:
        self._switch = switch
        self._install = install
        self._prepared: dict[int, _Prepared] = {}
        self._active = 0
        self._state = RuntimeState()
        self._lock = threading.Lock()
        self._heard = time.monotonic()
        self._supervisor: str | None = None

    def prepare(self, sid: int, prepared: _Prepared) -> None:
        with self._lock:
            self._prepared = {k: v for k, v in self._prepared.items() if k >= self._active}
            self._prepared[sid] = prepared

    def abort(self, sid: int) -> None:
        with self._lock:
            self._prepared.pop(sid, None)

    @property
    def committed(self) -> int:
        value: int = struct.unpack_from("Q", self._switch)[0]
        return value

    @property
    def state(self) -> RuntimeState:
        """The snapshot the current request started with (pinned), else the committed one."""
        pinned = _PINNED.get()
        return pinned if pinned is not None else self.committed_state()

    def pin(self) -> RuntimeState:
        """At the start of a request: this request keeps the snapshot committed now."""
        state = self.committed_state()
        _PINNED.set(state)
        return state

    def committed_state(self) -> RuntimeState:
        sid = self.committed
        if sid != self._active:
            with self._lock:
                prepared = self._prepared.get(sid)
                if sid != self._active and prepared is not None:
                    self._install(prepared)
                    self._state, self._active = prepared[0], sid
                    self._prepared = {k: v for k, v in self._prepared.items() if k > sid}
        return self._state

    def tick(self, stalled: str | None) -> None:
        self._heard, self._supervisor = time.monotonic(), stalled

    def stalled(self, bound: float) -> str | None:
        if self._supervisor is not None:
            return self._supervisor
        silent = time.monotonic() - self._heard
        return f"the supervisor has not answered for {silent:.0f}s" if silent > bound else None


class Worker:
    def __init__(
        self, index: int, channel: Channel, listener: socket.socket, switch: mmap.mmap
    ) -> None:
        self.index = index
        self.channel = channel
        self.listener = listener
        self.view = WorkerView(switch, self._install)
        self.container = Container()
        self.server: GranianServer | None = None
        self._logging: LoggingSettings | None = None
        self._asked: dict[int, Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def run(self) -> int:
        try:
            while True:
                message = self.channel.recv()
                if self._handle(message) is False:
                    return 0
        except ChannelClosed:  # the supervisor is gone: nobody can drain us any more
            if self.server is not None:
                self.server.stop(timeout=1.0)
            return 0

    def _handle(self, message: dict[str, Any]) -> bool:
        op = message.get("op")
        if "reply_to" in message:  # the supervisor's answer to something this worker asked
            asked = self._asked.pop(int(message["reply_to"]), None)
            if asked is not None:
                asked.set_result(message)
        elif op == "rows":
            self._reply(message, rows=encode_rows(self.container.metrics().http.rows()))
        elif op == "prepare":
            self._reply(message, **self._prepare(message))
        elif op == "commit":
            self._commit()
        elif op == "abort":
            self.view.abort(message["id"])
        elif op == "tick":
            self.view.tick(message.get("stalled"))
        elif op == "drain" and self.server is not None:
            self.server.start_draining()
        elif op == "close":
            if self.server is not None:
                self.server.close_listener()
            self._reply(message)
        elif op == "status":
            server = self.server
            pending, idle = (server.pending, server.idle_connections) if server else (0, 0)
            self._reply(message, pending=pending, idle=idle)
        elif op == "stop":
            if self.server is not None:
                self.server.stop(timeout=1.0)
            return False
        return True

    def _prepare(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            state, values = read_snapshot(message["snapshot"])
        except Exception as exc:  # the whole change is aborted, on every worker
            return {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        self.view.prepare(message["id"], (state, values))
        return {"ok": True}

    def _install(self, prepared: _Prepared) -> None:
        """The committed snapshot's values in use (under the view's lock, at the switch)."""
        cache = self.container.secret_cache()
        cache.promote(prepared[1])
        cache.retain(prepared[1])

    def _commit(self) -> None:
        """After the switch: what may take longer than a request should wait for."""
        previous_logging = self._logging
        state = self.view.committed_state()
        if state.settings is None:
            return
        if self.server is None:
            self._start(state)
        elif previous_logging != state.settings.logging:
            self.container.logging().apply(state.settings.logging)
        self._logging = state.settings.logging
        self.container.integrations().configure(state.settings)

    def _start(self, state: RuntimeState) -> None:
        """The first commit: configure logging, build the app, serve the inherited socket."""
        c = self.container
        assert state.settings is not None
        c.settings.override(providers.Object(state.settings))
        c.bus.override(providers.Object(self.view))
        c.boot_id.override(providers.Object(f"worker-{self.index}"))
        c.web_app.add_kwargs(request_fields=self._request_fields, render_metrics=self._metrics)
        logs = c.logging()
        logs.fields = {"worker": self.index}
        self.server = GranianServer(
            c.web_app(),
            **engine_settings(state.settings),
            listener=self.listener,
            multiprocess=True,
        )
        c.metrics().in_flight.set_function(
            lambda: float(self.server.in_flight if self.server else 0)
        )
        self.server.bind()
        threading.Thread(target=self._serve, name="mira-server", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="mira-heartbeat", daemon=True).start()

    def _serve(self) -> None:
        """The engine's thread: if it fails, the worker exits and the supervisor replaces it
        (a worker that kept its heartbeat without serving would never be)."""
        assert self.server is not None
        try:
            self.server.serve_forever()
        except Exception:
            log.exception("HTTP server failed; the worker exits", worker=self.index)
            self.container.logging().flush()
            os._exit(1)

    def _request_fields(self) -> dict[str, Any]:
        """Called at the start of each request: pin its snapshot, name it on its lines."""
        return {"worker": self.index, "config_generation": self.view.pin().config_generation}

    def _metrics(self) -> bytes:
        """/metrics: the whole service's, as the supervisor sums it (this worker's own when the
        supervisor does not answer in time)."""
        rid = next(self._ids)
        asked: Future[dict[str, Any]] = Future()
        self._asked[rid] = asked
        try:
            self.channel.send({"op": "metrics", "rid": rid})
            return str(asked.result(5.0)["text"]).encode()
        except (ChannelClosed, FutureTimeout):
            self._asked.pop(rid, None)
            return self.container.metrics().render()

    def _heartbeat(self) -> None:
        http = self.container.metrics().http
        while True:
            server = self.server
            in_flight, threads = (server.in_flight, server.threads) if server else (0, (0, 0))
            try:
                self.channel.send(
                    {
                        "op": "heartbeat",
                        "in_flight": in_flight,
                        "threads": threads,
                        "rows": encode_rows(http.rows()),
                    }
                )
            except ChannelClosed:
                return
            time.sleep(HEARTBEAT)

    def _reply(self, message: dict[str, Any], **fields: Any) -> None:
        self.channel.send({"reply_to": message.get("rid", 0), **fields})


def main(argv: list[str]) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    index, listen_fd, control_fd, switch_fd = (int(a) for a in argv)
    channel = Channel(socket.socket(fileno=control_fd))
    listener = socket.socket(fileno=listen_fd)
    switch = mmap.mmap(switch_fd, 8, prot=mmap.PROT_READ)
    return Worker(index, channel, listener, switch).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
