"""Config file watcher: watchdog events on the file's directory plus a polling fallback."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from mira.adapters.config_file import MAX_CONFIG_BYTES, ConfigSnapshot, read_config_file

_log = structlog.get_logger("mira.config.watcher")
__all__ = ["MAX_CONFIG_BYTES", "ConfigSnapshot", "ConfigWatcher", "read_config_file"]

# Open/close-nowrite events are left out: with them, our own reads would re-trigger the handler.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
]
# watchdog holds an unpaired IN_MOVED_FROM for up to 0.5 s; cheap stat checks cover that window.
HOT_WINDOW = 0.6
FAST_CHECK_INTERVAL = 0.001
FULL_CHECK_EVERY_N_POLLS = 10
# An unreadable or empty file is reported only if it stays so this long: editors and in-place
# writers pass through those states on every save.
SETTLE_GRACE = 0.25
MAX_DEBOUNCE_FACTOR = 10

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


class _EventForwarder(FileSystemEventHandler):
    """Hands every filtered watchdog event to the watcher; never lets an error escape."""

    def __init__(self, sink: Callable[[FileSystemEvent], None]) -> None:
        self._sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._sink(event)
        except Exception:
            _log.exception("config watcher failed to handle a file event", event=repr(event))


class ConfigWatcher:
    """Calls `on_change` on its own thread whenever the config file's content differs.

    With `initial_digest=None` the current content counts as a change and is reported once at
    start; pass the digest of the snapshot you already loaded to hear only about later changes.
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
        self._poll_interval = poll_interval
        self._debounce = debounce
        self._use_events = use_events
        self._last_digest = initial_digest
        self._signature: Signature | None = None
        self._settle_due: float | None = None
        self._check_lock = threading.RLock()
        # Flags written by the watchdog thread and read by the worker, under _lock.
        self._lock = threading.Lock()
        self._full_pending = False
        self._debounce_first = 0.0
        self._debounce_due: float | None = None
        self._hot_until = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None
        self._attach_failed = False
        self._last_poll = 0.0
        self._polls = 0

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
        if read_config_file(self._path).digest != self._last_digest:
            with self._lock:
                self._full_pending = True
        self._last_poll = time.monotonic()
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
            self._poll_interval = seconds
        self._wake.set()

    def check_now(self) -> None:
        """Read and compare on the calling thread; reports an unreadable file at once."""
        self._full_check(time.monotonic(), force=True)

    def _attach_observer(self) -> None:
        observer = Observer()
        handler = _EventForwarder(self._on_event)
        try:
            observer.schedule(handler, self._dir, recursive=False, event_filter=WATCHED_EVENTS)
            observer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                observer.stop()  # the inotify reader thread starts in the constructor
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
        self._observer = observer

    def _detach_observer(self, timeout: float) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)

    def _observer_alive(self) -> bool:
        observer = self._observer
        return observer is not None and any(e.is_alive() for e in observer.emitters)

    def _on_event(self, event: FileSystemEvent) -> None:
        now = time.monotonic()
        kind = type(event)
        # A created or modified config file is being written in place: wait for the writer.
        writing = kind in (FileModifiedEvent, FileCreatedEvent)
        own = writing and os.fsdecode(event.src_path) in self._own_paths
        with self._lock:
            self._hot_until = now + HOT_WINDOW
            if own:
                if self._debounce_due is None:
                    self._debounce_first = now
                cap = self._debounce_first + MAX_DEBOUNCE_FACTOR * self._debounce
                self._debounce_due = min(now + self._debounce, cap)
            elif kind is not FileModifiedEvent:  # other files' writes only get stat checks
                self._full_pending = True
                self._debounce_due = None
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._wait_time(time.monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            self._safely(self._step, time.monotonic())

    def _safely(self, action: Callable[[float], None], now: float) -> None:
        try:
            action(now)
        except Exception:
            _log.exception("config watcher check failed; still watching", path=self._path)

    def _wait_time(self, now: float) -> float:
        with self._lock:
            if self._full_pending:
                return 0.0
            due = [self._last_poll + self._poll_interval]
            if self._debounce_due is not None:
                due.append(self._debounce_due)
            elif now < self._hot_until:
                due.append(now + FAST_CHECK_INTERVAL)
            if self._hot_until:
                due.append(self._hot_until)
        if self._settle_due is not None:
            due.append(self._settle_due)
        return max(0.0, min(due) - now)

    def _step(self, now: float) -> None:
        with self._lock:
            debounced = self._debounce_due is not None and now >= self._debounce_due
            full = self._full_pending or debounced
            if full:
                self._full_pending = False
                self._debounce_due = None
            debouncing = self._debounce_due is not None
            hot = now < self._hot_until
            trailing = not hot and self._hot_until > 0  # a burst just ended: read once more
            if trailing:
                self._hot_until = 0.0
            poll_due = now >= self._last_poll + self._poll_interval
        settle_due = self._settle_due is not None and now >= self._settle_due
        if full or trailing or settle_due:
            self._full_check(now)
        elif hot and not debouncing:
            self._fast_check(now)
        if poll_due:
            self._poll(now, debouncing)

    def _poll(self, now: float, debouncing: bool) -> None:
        self._last_poll = now
        self._polls += 1
        if self._use_events and not self._observer_alive():
            self._detach_observer(0.5)
            self._attach_observer()
        if debouncing:
            return
        if self._polls % FULL_CHECK_EVERY_N_POLLS == 0:
            self._full_check(now)
        else:
            self._fast_check(now)

    def _fast_check(self, now: float) -> None:
        if _signature(self._path, self._data_link) != self._signature:
            self._full_check(now)

    def _full_check(self, now: float, force: bool = False) -> None:
        with self._check_lock:
            # Taken before the read, so a change during the read still shows as a difference.
            self._signature = _signature(self._path, self._data_link)
            self._own_paths = frozenset({self._abs_path, os.path.realpath(self._abs_path)})
            snapshot = read_config_file(self._path)
            if snapshot.digest == self._last_digest:
                self._settle_due = None
                return
            if not force and _unsettled(snapshot):
                if self._settle_due is None:
                    self._settle_due = now + SETTLE_GRACE
                if now < self._settle_due:
                    return
            self._settle_due = None
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
