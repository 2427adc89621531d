"""Kubernetes Secrets watches: one thread per Secret, 410-aware re-list, change callbacks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from mira.adapters.kubernetes_api import UNKNOWN, Key, decode, kube, show

log = structlog.get_logger("mira.secrets.kubernetes")

MIN_BACKOFF = 0.2


class WatchedCache(Protocol):
    """What a watch needs from the backend: the API, its timeouts, and the shared cache."""

    v1: Any
    request_timeout: float
    watch_timeout: int
    max_backoff: float

    def relist(self, ref: Key) -> tuple[str, dict[str, str] | None]: ...

    def cached(self, ref: Key) -> object: ...

    def store(self, ref: Key, data: dict[str, str] | None) -> None: ...

    def set_synced(self, ref: Key, synced: bool) -> bool: ...


class WatchGroup:
    """The threads started by one `watch()` call, stopped together."""

    def __init__(self, backend: WatchedCache, on_change: Callable[[str], None]):
        self._backend, self._on_change = backend, on_change
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: dict[Key, dict[str, str] | None] = {}  # what this group last reported
        self._watches: set[Any] = set()
        self._lock = threading.Lock()

    def start(self, ref: Key, path: str) -> None:
        name = f"mira-k8s-watch-{show(ref)}"
        thread = threading.Thread(target=self._run, args=(ref, path), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stopping.set()
        others = [t for t in self._threads if t is not threading.current_thread()]
        deadline = time.monotonic() + 5
        while any(t.is_alive() for t in others) and time.monotonic() < deadline:
            with self._lock:
                watches = list(self._watches)
            for w in watches:
                w.stop()  # shuts the socket down; repeated as a watch may be mid-connect
            for thread in others:
                thread.join(timeout=0.05)

    def _run(self, ref: Key, path: str) -> None:
        api_exception = kube().client.exceptions.ApiException
        backoff, synced, rv = MIN_BACKOFF, False, None
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                if rv is None:
                    rv, data = self._backend.relist(ref)
                    self._apply(ref, path, data)
                    synced = synced or self._backend.set_synced(ref, True)
                rv = self._stream(ref, path, rv)
                if time.monotonic() - started > 1:
                    backoff = MIN_BACKOFF
                    continue
            except api_exception as exc:
                rv = None
                if exc.status == 410:
                    log.info("kubernetes_watch_expired", secret=show(ref))
                    continue
                log.warning("kubernetes_watch_failed", secret=show(ref), status=exc.status)
            except Exception:
                rv = None
                if not self._stopping.is_set():
                    log.warning("kubernetes_watch_failed", secret=show(ref), exc_info=True)
            if rv is None and synced:
                synced = self._backend.set_synced(ref, False)
            # Each retry starts with a re-list, so a failing watch still polls the Secret.
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self._backend.max_backoff)
        if synced:
            self._backend.set_synced(ref, False)

    def _stream(self, ref: Key, path: str, rv: str) -> str:
        backend = self._backend
        timeout = backend.request_timeout
        w = kube().watch.Watch()
        with self._lock:
            self._watches.add(w)
        try:
            if self._stopping.is_set():
                return rv
            events = w.stream(
                backend.v1.list_namespaced_secret,
                ref[0],
                field_selector=f"metadata.name={ref[1]}",
                resource_version=rv,
                timeout_seconds=backend.watch_timeout,
                _request_timeout=(timeout, backend.watch_timeout + timeout),
            )
            for event in events:
                if self._stopping.is_set():
                    break
                if not isinstance(event, dict):
                    continue  # a blank keep-alive line
                raw = event["raw_object"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._apply(ref, path, decode(ref, raw.get("data")))
                elif event["type"] == "DELETED":
                    self._apply(ref, path, None)
                rv = w.resource_version or rv
        finally:
            with self._lock:
                self._watches.discard(w)
        return rv

    def _apply(self, ref: Key, path: str, data: dict[str, str] | None) -> None:
        previous = self._seen.get(ref, UNKNOWN)
        if previous is UNKNOWN:
            # First list: compare with what get_secret last served, so a rotation between the
            # caller's read and the watch's start is still reported.
            previous = self._backend.cached(ref)
        self._backend.store(ref, data)
        self._seen[ref] = data
        if previous is UNKNOWN or previous == data:
            return
        log.info("kubernetes_secret_changed", secret=show(ref), deleted=data is None)
        try:
            self._on_change(path)
        except Exception:
            log.exception("kubernetes_on_change_failed", secret=show(ref))
