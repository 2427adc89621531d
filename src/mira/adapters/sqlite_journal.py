"""The journal's SQLite file (WAL mode): one writer (the bus thread), any number of readers."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from mira.domain.journal_record import JournalRecord, canonical_json

SCHEMA_VERSION = 1
#: Error names that mean the file is not (or no longer) a database: moved aside at start-up.
_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_COLUMNS = ["position", "at", "type", "correlation_id", "fields"]
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, at REAL NOT NULL,"
    " type TEXT NOT NULL, correlation_id TEXT NOT NULL, fields TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_type ON events (type, position)",
    "CREATE INDEX IF NOT EXISTS events_at ON events (at)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class JournalUnavailable(Exception):
    """The file cannot be used now (a directory missing or read-only, a lock, a full disk)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class JournalCorrupt(JournalUnavailable):
    """The file is not a readable journal (garbage, truncated, another program's database)."""


def reason_of(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def _failure(path: str, exc: BaseException) -> JournalUnavailable:
    kind = JournalCorrupt if getattr(exc, "sqlite_errorname", None) in _CORRUPT else None
    return (kind or JournalUnavailable)(path, reason_of(exc))


def _check_schema(conn: sqlite3.Connection, path: str) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version == 0 and not tables:
        return
    if version > SCHEMA_VERSION:
        raise JournalUnavailable(path, f"written by a newer Mira (schema {version})")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    if version != SCHEMA_VERSION or columns != _COLUMNS:
        raise JournalCorrupt(path, "not a Mira event journal (unexpected tables)")


def check_place(path: str) -> None:
    """Where the file goes can hold a journal: raises JournalUnavailable if not."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise JournalUnavailable(path, f"directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):  # WAL mode writes <path>-wal and -shm beside it
        raise JournalUnavailable(path, f"directory {str(parent)!r} is not writable")
    if Path(path).is_dir():
        raise JournalUnavailable(path, "is a directory")


class SqliteStore:
    """Appends records and drops the oldest beyond `max_events`; positions never go back."""

    def __init__(self, conn: sqlite3.Connection, path: str, max_events: int) -> None:
        self._conn, self.path, self.max_events = conn, path, max_events
        first, last = conn.execute("SELECT min(position), max(position) FROM events").fetchone()
        self.first_position: int = first or 0
        self.last_position: int = last or 0

    @classmethod
    def open(cls, path: str, max_events: int, timeout: float = 1.0) -> SqliteStore:
        """Open (or create), check and prepare for writing; raises JournalUnavailable."""
        check_place(path)
        conn = None
        try:
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise JournalCorrupt(path, "; ".join(problems))
            _check_schema(conn, path)
            conn.execute("BEGIN IMMEDIATE")  # a write lock now: a locked file fails at start
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
            return cls(conn, path, max_events)
        except JournalUnavailable:
            _close(conn)
            raise
        except (sqlite3.Error, OSError) as exc:
            _close(conn)
            raise _failure(path, exc) from None

    def append(self, record: JournalRecord, redact: Callable[[str], str] = str) -> None:
        """Insert one record (and drop what falls out of retention) in one transaction."""
        fields = redact(canonical_json(record.fields))
        row = (record.position, record.at, record.type, record.correlation_id, fields)
        drop_upto = record.position - self.max_events
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", row)
            if drop_upto >= self.first_position:
                self._conn.execute("DELETE FROM events WHERE position <= ?", (drop_upto,))
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        self.last_position = record.position
        self.first_position = max(self.first_position or record.position, drop_upto + 1)

    def checkpoint(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        _close(self._conn)


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def move_aside(path: str, stamp: str) -> str:
    """Rename the file (and its -wal/-shm) to `<path>.corrupt-<stamp>`; the new name."""
    target, n = f"{path}.corrupt-{stamp}", 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt-{stamp}-{n}"
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target


def open_reader(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing journal; raises JournalUnavailable."""
    if not os.path.exists(path):
        raise JournalUnavailable(path, "no such file")
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
        _check_schema(conn, path)
        if not conn.execute("PRAGMA table_info(events)").fetchall():
            raise JournalCorrupt(path, "not a Mira event journal (no events table)")
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise _failure(path, exc) from None


def read_records(
    conn: sqlite3.Connection,
    path: str,
    after: int = 0,
    since_time: float | None = None,
    types: Sequence[str] = (),
    correlation_id: str | None = None,
) -> list[JournalRecord]:
    """Records after position `after`, at or after `since_time`, filtered, in order."""
    where: list[str] = ["position > ?"]
    args: list[object] = [after]
    if since_time is not None:
        where.append("at >= ?")
        args.append(since_time)
    if types:
        where.append(f"type IN ({', '.join('?' * len(types))})")
        args.extend(types)
    if correlation_id is not None:
        where.append("correlation_id = ?")
        args.append(correlation_id)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM events WHERE {' AND '.join(where)} ORDER BY position"
    try:
        rows = conn.execute(sql, args).fetchall()
        return [JournalRecord(p, at, t, cid, json.loads(f)) for p, at, t, cid, f in rows]
    except (sqlite3.Error, ValueError) as exc:
        raise _failure(path, exc) from None
