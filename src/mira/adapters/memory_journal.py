"""A bounded in-memory event journal."""

from __future__ import annotations

import threading
from collections import deque


class InMemoryJournal:
    """Keeps the last `maxlen` events; `read(since)` returns events after position `since`."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self._events: deque[object] = deque(maxlen=maxlen)
        self._appended = 0
        self._lock = threading.Lock()

    def append(self, event: object) -> None:
        with self._lock:
            self._events.append(event)
            self._appended += 1

    def read(self, since: int = 0) -> list[object]:
        with self._lock:
            first = self._appended - len(self._events)
            return list(self._events)[max(0, since - first) :]

    def entries(self) -> list[tuple[int, object]]:
        """The events kept, each with its position (1 is the first event of this run)."""
        with self._lock:
            first = self._appended - len(self._events) + 1
            return list(enumerate(self._events, start=first))

    def flush(self) -> None:
        """Nothing buffered in memory."""

    def __len__(self) -> int:
        return self._appended
