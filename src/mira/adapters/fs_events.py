"""Filesystem events (watchdog): one observer on a directory, change events only, never raising.

Shared by the config watcher and the file secrets backend. What a change is (FINDINGS.md):
a Kubernetes `..data` swap only ever shows as events on other names in the directory, so
every event in it counts; open and close-without-write events are left out, or our own reads
would wake us again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
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

__all__ = [
    "CHANGE_EVENTS",
    "DirModifiedEvent",
    "DirectoryEvents",
    "FileCreatedEvent",
    "FileModifiedEvent",
    "FileSystemEvent",
]

_log = structlog.get_logger("mira.fs_events")

CHANGE_EVENTS: tuple[type[FileSystemEvent], ...] = (
    FileCreatedEvent,
    DirCreatedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileModifiedEvent,
    DirModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,  # close after a write (close-nowrite is another class)
)


class _Forwarder(FileSystemEventHandler):
    """Hands every filtered event to the sink; an error in the sink is logged, never raised."""

    def __init__(self, sink: Callable[[FileSystemEvent], None]) -> None:
        self._sink = sink

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._sink(event)
        except Exception:
            _log.exception("file event handler failed", event=repr(event))


class DirectoryEvents:
    """Change events of one directory, delivered to `sink` on watchdog's thread."""

    def __init__(
        self, directory: str, sink: Callable[[FileSystemEvent], None], *, recursive: bool = False
    ) -> None:
        self.directory = directory
        self._sink = sink
        self._recursive = recursive
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Start the observer; raises OSError (or watchdog's error) if the directory cannot be
        watched, leaving no thread behind."""
        observer = Observer()
        try:
            observer.schedule(
                _Forwarder(self._sink),
                self.directory,
                recursive=self._recursive,
                event_filter=list(CHANGE_EVENTS),
            )
            observer.start()
        except Exception:
            with contextlib.suppress(Exception):
                observer.stop()  # the inotify reader thread starts in the constructor
            raise
        self._observer = observer

    @property
    def alive(self) -> bool:
        """True while the observer runs and its emitter still reads events."""
        observer = self._observer
        return observer is not None and any(e.is_alive() for e in observer.emitters)

    def stop(self, timeout: float = 5.0) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout)
