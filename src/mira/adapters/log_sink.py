"""Where log lines go: a queued, logrotate-aware sink and the secret-masking redactor."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable

import orjson

from mira.domain.secret_value import MASK

_MASK_BYTES = MASK.encode()


class LogSink:
    """Writes whole lines to stdout or a file; reopens the file when logrotate moves it.

    Request threads only queue their line: a write(2) per line releases the GIL and, on a
    threaded server, costs far more in thread switches than the syscall itself (measured: the
    access line took 8 % of throughput written inline). A flusher thread writes the queue every
    FLUSH_EVERY seconds (or sooner when it grows); WARNING and above, start-up, shutdown and
    exit flush at once, so an error is never held back.
    """

    CHECK_EVERY = 1.0
    FLUSH_EVERY = 0.05
    MAX_PENDING = 512

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._path: str | None = None
        self._fd = sys.stdout.fileno() if hasattr(sys.stdout, "fileno") else 1
        self._own_fd = False
        self._next_check = 0.0
        self._pending: deque[bytes] = deque()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def path(self) -> str | None:
        return self._path

    def open(self, path: str | None) -> None:
        """Switch to `path` (None: stdout). Raises OSError naming the path if it cannot open."""
        with self._lock:
            self.flush()
            new_fd = self._open_file(path) if path else sys.stdout.fileno()
            old_fd, own = self._fd, self._own_fd
            self._fd, self._own_fd, self._path = new_fd, bool(path), path
            if own and old_fd != new_fd:
                os.close(old_fd)

    @staticmethod
    def _open_file(path: str) -> int:
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot open log file {path}: {exc.strerror}") from None

    def _reopen_if_moved(self) -> None:
        now = time.monotonic()
        if now < self._next_check or self._path is None:
            return
        self._next_check = now + self.CHECK_EVERY
        try:
            st = os.stat(self._path)
            current = os.fstat(self._fd)
            moved = (st.st_ino, st.st_dev) != (current.st_ino, current.st_dev)
        except OSError:
            moved = True
        if moved:
            # On failure keep writing to the old descriptor rather than lose lines.
            with contextlib.suppress(OSError):
                self.open(self._path)

    def write(self, line: bytes, urgent: bool = False) -> None:
        """Queue a line; `urgent` (or no flusher thread running) writes it now."""
        self._pending.append(line)
        if urgent or self._flusher is None or self._pid != os.getpid():
            self.flush()
        elif len(self._pending) > self.MAX_PENDING:
            self._wake.set()

    def flush(self) -> None:
        """Write every queued line, in order."""
        with self._lock:
            if not self._pending:
                return
            if self._path is not None:
                self._reopen_if_moved()
            lines = []
            with contextlib.suppress(IndexError):
                while True:
                    lines.append(self._pending.popleft())
            view = memoryview(b"".join(lines))
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def start_flusher(self) -> None:
        """Start buffering (idempotent); until then every line is written at once."""
        with self._lock:
            if self._flusher is not None and self._flusher.is_alive():
                return
            self._pid = os.getpid()
            self._flusher = threading.Thread(
                target=self._flush_loop, name="mira-log-flusher", daemon=True
            )
            self._flusher.start()
            atexit.register(self.flush)

    def _flush_loop(self) -> None:
        while True:
            self._wake.wait(self.FLUSH_EVERY)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never die: a full disk must not stop the service
                self._pending.clear()

    def close(self) -> None:
        with self._lock:
            self.flush()
            if self._own_fd:
                os.close(self._fd)
            self._fd, self._own_fd, self._path = sys.stdout.fileno(), False, None


class Redactor:
    """Masks every currently known secret value wherever it appears in a rendered line."""

    def __init__(self) -> None:
        self._needles: tuple[bytes, ...] = ()

    def set_secrets(self, values: Iterable[str]) -> None:
        needles: set[bytes] = set()
        for value in values:
            if len(value) >= 4:  # masking tiny strings would mangle ordinary text
                needles.add(value.encode())
                needles.add(orjson.dumps(value)[1:-1])
        self._needles = tuple(sorted(needles, key=len, reverse=True))

    def __call__(self, line: bytes) -> bytes:
        for needle in self._needles:
            if needle in line:
                line = line.replace(needle, _MASK_BYTES)
        return line
