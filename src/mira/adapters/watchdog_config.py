"""Config file watcher: watchdog events on the file's directory plus a polling fallback."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import structlog

from mira.adapters.config_file import MAX_CONFIG_BYTES, ConfigSnapshot, read_config_file
from mira.adapters.fs_events import (
    DirectoryEvents,
    DirModifiedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileSystemEvent,
)
from mira.adapters.watch_timer import Check, WatchTimer

_log = structlog.get_logger("mira.config.watcher")
__all__ = ["MAX_CONFIG_BYTES", "ConfigSnapshot", "ConfigWatcher", "read_config_file"]

Signature = tuple[object, ...]


def _signature(path: str, data_link: str) -> Signature:
    """Cheap change detector: the resolved file's identity and times, and the `..data` target."""
    try:
        info = os.stat(path)
        found: Signature = (
            info.st_dev,
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
            info.st_ctime_ns,
        )
    except OSError as exc:
        found = ("error", exc.errno)
    try:
        target: str | None = os.readlink(data_link)
    except OSError:
        target = None
    return (*found, target)


class ConfigWatcher:
    """Calls `on_change` on its own thread whenever the config file's content differs.

    With `initial_digest=None` the current content counts as a change and is reported once at
    start; pass the digest of the snapshot you already loaded to hear only about later changes.
    When to check is `WatchTimer`'s decision, on the injected `clock`.
    """

    def __init__(
        self,
        path: str,
        on_change: Callable[[ConfigSnapshot], None],
        *,
        poll_interval: float = 5.0,
        debounce: float = 0.05,
        use_events: bool = True,
        initial_digest: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _require_positive("poll_interval", poll_interval)
        if debounce < 0:
            raise ValueError(f"config watcher debounce must be >= 0 seconds, got {debounce!r}")
        self._path = path
        self._abs_path = os.path.abspath(path)
        self._own_paths = frozenset({self._abs_path})
        self._dir = os.path.dirname(self._abs_path)
        self._data_link = os.path.join(self._dir, "..data")
        self._on_change = on_change
        self._use_events = use_events
        self._last_digest = initial_digest
        self._signature: Signature | None = None
        self._clock = clock
        self._check_lock = threading.RLock()
        # The timer is changed by the watchdog thread and the worker, under _lock.
        self._lock = threading.Lock()
        self._timer = WatchTimer(poll_interval, debounce, clock())
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: DirectoryEvents | None = None
        self._attach_failed = False

    @property
    def running(self) -> bool:
        """True between start() and stop() while the worker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping.is_set()

    def start(self) -> None:
        """Start watching; file events are live when this returns."""
        if self.running:
            raise RuntimeError(f"config watcher for {self._path!r} is already running")
        self._stopping.clear()
        if self._use_events:
            self._attach_observer()
        # Compare now, so that a write racing with start() is judged by its events, not by a
        # read the worker thread would make at an arbitrary moment later.
        self._signature = _signature(self._path, self._data_link)
        self._own_paths = frozenset({self._abs_path, os.path.realpath(self._abs_path)})
        changed = read_config_file(self._path).digest != self._last_digest
        with self._lock:
            self._timer = WatchTimer(self._timer.poll_interval, self._timer.debounce, self._clock())
            self._timer.full_pending = changed
        self._thread = threading.Thread(target=self._run, name="mira-config-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the observer and the worker thread, waiting at most about `timeout` seconds."""
        self._stopping.set()
        self._wake.set()
        self._detach_observer(timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                _log.warning("config watcher thread did not stop in time", path=self._path)

    def set_poll_interval(self, seconds: float) -> None:
        """Change the fallback poll interval of a running watcher."""
        _require_positive("poll_interval", seconds)
        with self._lock:
            self._timer.poll_interval = seconds
        self._wake.set()

    def check_now(self) -> None:
        """Read and compare on the calling thread; reports an unreadable file at once."""
        self._full_check(self._clock(), force=True)

    def _attach_observer(self) -> None:
        events = DirectoryEvents(self._dir, self._on_event)
        try:
            events.start()
        except Exception as exc:
            if not self._attach_failed:
                _log.warning(
                    "config watcher cannot watch the directory, polling only until it can",
                    directory=self._dir,
                    error=str(exc),
                )
            self._attach_failed = True
            return
        if self._attach_failed:
            _log.info("config watcher watches the directory again", directory=self._dir)
        self._attach_failed = False
        self._events = events

    def _detach_observer(self, timeout: float) -> None:
        events, self._events = self._events, None
        if events is not None:
            events.stop(timeout)

    def _on_event(self, event: FileSystemEvent) -> None:
        now = self._clock()
        kind = type(event)
        # A created or modified config file is being written in place: wait for the writer.
        writing = kind in (FileModifiedEvent, FileCreatedEvent)
        own = writing and os.fsdecode(event.src_path) in self._own_paths
        with self._lock:
            if own:
                self._timer.own_write(now)
            else:
                # Other files' writes (and the directory's own modified event, which follows
                # every create, move and delete already counted) only get stat checks.
                structural = kind not in (FileModifiedEvent, DirModifiedEvent)
                self._timer.other_event(now, structural)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                wait = self._timer.wait_time(self._clock())
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._step(self._clock())
            except Exception:
                _log.exception("config watcher check failed; still watching", path=self._path)

    def _step(self, now: float) -> None:
        with self._lock:
            plan = self._timer.step(now)
        self._check(plan.check, now)
        if plan.poll and self._use_events and not (self._events and self._events.alive):
            self._detach_observer(0.5)
            self._attach_observer()
        self._check(plan.poll_check, now)

    def _check(self, check: Check, now: float) -> None:
        moved = check == "fast" and _signature(self._path, self._data_link) != self._signature
        if check == "full" or moved:
            self._full_check(now)

    def _full_check(self, now: float, force: bool = False) -> None:
        with self._check_lock:
            # Taken before the read, so a change during the read still shows as a difference.
            self._signature = _signature(self._path, self._data_link)
            self._own_paths = frozenset({self._abs_path, os.path.realpath(self._abs_path)})
            snapshot = read_config_file(self._path)
            with self._lock:
                if snapshot.digest == self._last_digest:
                    self._timer.settled()
                    return
                if not force and _unsettled(snapshot) and self._timer.hold_unsettled(now):
                    return
                self._timer.settled()
            self._last_digest = snapshot.digest
            self._report(snapshot)

    def _report(self, snapshot: ConfigSnapshot) -> None:
        try:
            self._on_change(snapshot)
        except Exception:
            _log.exception("config change callback failed; still watching", path=self._path)
        # Logged after the callback: a slow log sink must not delay the reload.
        if snapshot.error is None:
            _log.info("config file changed", path=self._path, digest=snapshot.digest[:12])
        else:
            _log.warning("config file unreadable", path=self._path, error=snapshot.error)


def _unsettled(snapshot: ConfigSnapshot) -> bool:
    return snapshot.text is None or not snapshot.text.strip()


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"config watcher {name} must be > 0 seconds, got {value!r}")
