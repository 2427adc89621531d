"""The durable event journal: every event in the SQLite file and this run's in memory.

When the file cannot be written (a read-only or missing directory, a full disk, a lock), the
journal says so once (a WARNING naming the path and the reason), keeps events in memory only,
and reports itself degraded (/ready's `journal` section, `mira_journal_degraded`). Rows already
in the file stay there. The next event at least RETRY_SECONDS later tries the file again; once
it opens, the events kept in memory meanwhile are written first (those memory could not keep
are counted), and the journal says it is durable again. A corrupt file found at start-up is
moved aside and a new one started.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from mira.adapters.sqlite_journal import (
    JournalCorrupt,
    JournalUnavailable,
    SqliteStore,
    move_aside,
    reason_of,
)
from mira.domain.journal_record import to_record

log = structlog.get_logger("mira.journal")


#: How long after a failure the next event tries the file again (events are rare: reloads,
#: rotations, lifecycle steps, so a try costs nothing between them).
RETRY_SECONDS = 5.0


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


class DurableJournal:
    """An EventJournal on `path`; `open()` before the first append, `close()` after the last."""

    def __init__(
        self,
        path: str,
        max_events: int = 100_000,
        *,
        redact: Callable[[str], str] = str,
        memory_max: int = 10_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.max_events = path, max_events
        self._redact, self._now = redact, now
        self._store: SqliteStore | None = None
        self._memory: deque[tuple[int, object]] = deque(maxlen=memory_max)
        self._position = 0
        self._lock = threading.Lock()  # the position and the in-memory events
        # One connection: appends (the bus thread), flush (the shutdown hooks' thread), close.
        self._write = threading.Lock()
        self.degraded_reason: str | None = None
        self.moved_to: str | None = None
        #: while degraded: the first position not in the file, and when to try it again
        self._unwritten_from = 1
        self._retry_at = 0.0

    def open(self) -> None:
        """Open, check and continue the file; never raises (degraded instead)."""
        try:
            self._store = self._open_or_replace()
        except JournalUnavailable as exc:
            self._degrade(exc.reason)
            return
        self._position = self._store.last_position

    def _open_or_replace(self) -> SqliteStore:
        try:
            return SqliteStore.open(self.path, self.max_events)
        except JournalCorrupt as exc:
            try:
                self.moved_to = move_aside(self.path, _stamp(self._now()))
            except OSError as move_exc:
                why = f"{exc.reason}; cannot move it aside: {reason_of(move_exc)}"
                raise JournalUnavailable(self.path, why) from None
            _warn(
                f"Event journal {self.path} is unreadable; moved it aside and started a new one",
                path=self.path,
                reason=exc.reason,
                moved_to=self.moved_to,
            )
            return SqliteStore.open(self.path, self.max_events)

    def append(self, event: object) -> None:
        """Keep the event in memory and write it to the file; never raises."""
        with self._lock:
            self._position += 1
            position = self._position
            self._memory.append((position, event))
        with self._write:
            store = self._store if self._store is not None else self._reopen(position)
            if store is None:
                return
            try:
                store.append(to_record(position, event), self._redact)
                return
            except Exception as exc:  # sqlite3.Error, OSError, MemoryError: the bus goes on
                self._store = None
                store.close()
                reason = reason_of(exc)
        self._degrade(reason, position)

    def read(self, since: int = 0) -> list[object]:
        """This run's events (the last `memory_max`) after position `since`."""
        with self._lock:
            return [event for position, event in self._memory if position > since]

    def flush(self) -> None:
        with self._write:
            if self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.checkpoint()

    def close(self) -> None:
        with self._write:
            store, self._store = self._store, None
            self._retry_at = float("inf")  # closed: no event opens the file again
        if store is not None:
            store.close()

    @property
    def position(self) -> int:
        return self._position

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def status(self) -> dict[str, Any]:
        """What /ready's `journal` section shows."""
        body: dict[str, Any] = {
            "status": "degraded" if self.degraded else "ok",
            "path": self.path,
            "position": self._position,
            "durable": self._store is not None,
        }
        if self.degraded_reason is not None:
            body["reason"] = self.degraded_reason
        if self.moved_to is not None:
            body["moved_aside"] = self.moved_to
        return body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Degraded is reported, not unready: the service keeps serving from memory."""
        return True, self.status()

    def _degrade(self, reason: str, position: int | None = None) -> None:
        """`position`: the event whose write failed (None: the file did not open)."""
        self.degraded_reason = reason
        self._unwritten_from = self._position + 1 if position is None else position
        self._retry_at = self._now() + RETRY_SECONDS
        lost = {} if position is None else {"first_position_in_memory_only": position}
        _warn(
            f"Event journal {self.path} cannot be written; keeping events in memory only",
            path=self.path,
            reason=reason,
            **lost,
        )

    def _reopen(self, position: int) -> SqliteStore | None:
        """Degraded, with `_write` held: at most every RETRY_SECONDS, open the file again and
        write what memory kept since the failure, before `position` (the caller writes it)."""
        now = self._now()
        if self.degraded_reason is None or now < self._retry_at:
            return None
        self._retry_at = now + RETRY_SECONDS
        try:
            store = SqliteStore.open(self.path, self.max_events)
        except (JournalUnavailable, JournalCorrupt):
            return None
        if store.last_position >= self._unwritten_from:  # not the file left off: no overwrite
            store.close()
            return None
        with self._lock:
            kept = [(p, e) for p, e in self._memory if self._unwritten_from <= p < position]
        try:
            for kept_position, event in kept:
                store.append(to_record(kept_position, event), self._redact)
        except Exception:  # still failing: stay degraded, try again later
            store.close()
            return None
        first_kept = kept[0][0] if kept else position
        self.degraded_reason = None
        self._store = store
        _warn(
            f"Event journal {self.path} is written again",
            path=self.path,
            written_from_memory=len(kept),
            lost=first_kept - self._unwritten_from,
        )
        return store


def _warn(message: str, **fields: Any) -> None:
    with contextlib.suppress(Exception):  # a failing log write must not fail the journal
        log.warning(message, **fields)
