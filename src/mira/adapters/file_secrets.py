"""Mounted-file secrets: Kubernetes Secret volumes (`..data` swaps) and Docker secrets."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from mira.adapters.fs_events import DirectoryEvents, FileSystemEvent
from mira.domain.config.model import FileSecretsSettings
from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable

log = structlog.get_logger("mira.secrets.file")

DATA_LINK = "..data"
_MAX_ATTEMPTS = 50
_Secret = dict[str, str] | str


class FileSecretsBackend(SecretsBackend):
    """`<directory>/<path>/<key>` files (a Secret volume) or a `<directory>/<path>` file."""

    name = "file"

    def __init__(self, settings: FileSecretsSettings, *, poll_interval: float = 5.0) -> None:
        self._settings = settings
        self._root = Path(settings.directory)
        self._poll_interval = poll_interval
        self._stops: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def get_secret(self, path: str, key: str | None = None) -> Any:
        secret = self._read(path)
        if key is None:
            return secret
        _check_name(key, "key")
        if isinstance(secret, str):
            raise SecretNotFound(f"file secret '{path}' is a single value; it has no key '{key}'")
        if key not in secret:
            raise SecretNotFound(f"file secret '{path}' has no key '{key}'")
        return secret[key]

    def _read(self, path: str) -> _Secret:
        """One consistent version of the secret at `path` (dict for a directory, else str)."""
        target = self._root / _check_path(path)
        for _ in range(_MAX_ATTEMPTS):
            try:
                if target.is_dir():
                    return _read_volume(target)
                return _strip_newline(target.read_text(encoding="utf-8"))
            except _Retry:
                continue
            except FileNotFoundError:
                if not target.exists():
                    raise SecretNotFound(f"file secret '{path}' not found") from None
            except UnicodeDecodeError:
                raise SecretsBackendUnavailable(f"file secret '{path}' is not UTF-8 text") from None
            except OSError as exc:
                raise SecretsBackendUnavailable(
                    f"file secret '{path}' unreadable: {exc.strerror or type(exc).__name__}"
                ) from None
        raise SecretsBackendUnavailable(f"file secret '{path}' kept changing while read")

    def watch(self, paths: Sequence[str], on_change: Callable[[str], None]) -> Callable[[], None]:
        if not self._settings.watch:
            return lambda: None
        for path in paths:
            _check_path(path)
        watcher = _DirectoryWatch(self, list(dict.fromkeys(paths)), on_change)
        watcher.start()
        with self._lock:
            self._stops.append(watcher.stop)
        return watcher.stop

    def check(self) -> str:
        try:
            entries = [e for e in os.listdir(self._root) if not e.startswith(".")]
        except OSError as exc:
            raise SecretsBackendUnavailable(
                f"secrets directory '{self._root}' unreadable: {exc.strerror}"
            ) from None
        return f"ok: {len(entries)} secrets in {self._root}"

    def close(self) -> None:
        with self._lock:
            stops, self._stops = self._stops, []
        for stop in stops:
            stop()


class _Retry(Exception):
    """The `..data` link moved during a read, or a file vanished mid-read."""


def _read_volume(directory: Path) -> dict[str, str]:
    """Read all keys from the one version `..data` points to, or from a plain directory."""
    link = directory / DATA_LINK
    try:
        version = os.readlink(link)
    except OSError:  # no `..data` symlink: a plain directory of key files
        return _read_keys(directory)
    try:
        values = _read_keys(directory / version)
        if os.readlink(link) != version:
            raise _Retry
    except FileNotFoundError:
        raise _Retry from None  # the kubelet deleted this version while we read it
    return values


def _read_keys(directory: Path) -> dict[str, str]:
    values = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_file():
                values[entry.name] = Path(entry.path).read_text(encoding="utf-8")
    return values


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid file secret path {path!r}: use NAME or DIR/NAME, no '..'")
    return path


def _check_name(key: str, what: str) -> None:
    if not key or "/" in key or key.startswith(".."):
        raise ValueError(f"invalid file secret {what} {key!r}")


def _strip_newline(value: str) -> str:
    return value[:-1] if value.endswith("\n") else value


def _digest(secret: _Secret | None) -> str | None:
    if secret is None:
        return None
    items = sorted(secret.items()) if isinstance(secret, dict) else secret
    return hashlib.sha256(repr(items).encode("utf-8")).hexdigest()


class _DirectoryWatch:
    """One observer on the directory and one thread comparing content hashes."""

    # Re-check shortly after an event: watchdog may hold half of the `..data` rename.
    FOLLOW_UPS = (0.02, 0.1, 0.6)

    def __init__(
        self, backend: FileSecretsBackend, paths: list[str], on_change: Callable[[str], None]
    ) -> None:
        self._backend, self._paths, self._on_change = backend, paths, on_change
        self._dirty, self._stopping = threading.Event(), threading.Event()
        self._digests = {p: self._initial_digest(p) for p in paths}
        self._events = DirectoryEvents(str(backend._root), self._woken, recursive=True)
        self._thread = threading.Thread(target=self._run, name="mira-file-secrets", daemon=True)

    def start(self) -> None:
        try:
            self._events.start()
        except OSError as exc:
            raise SecretsBackendUnavailable(
                f"cannot watch '{self._events.directory}': {exc.strerror}"
            ) from None
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._events.stop(timeout=5)

    def _woken(self, event: FileSystemEvent) -> None:
        self._dirty.set()

    def _run(self, follow_ups: int = 0) -> None:
        while not self._stopping.is_set():
            delay = self.FOLLOW_UPS[-follow_ups] if follow_ups else self._backend._poll_interval
            woken = self._dirty.wait(delay)
            if woken:
                self._settle()
            if self._stopping.is_set():
                return
            self._dirty.clear()
            follow_ups = len(self.FOLLOW_UPS) if woken else follow_ups - 1
            try:
                self._scan()
            except Exception:
                log.exception("file_secrets_scan_failed")

    def _settle(self, quiet: float = 0.02, longest: float = 0.25) -> None:
        """Wait for a burst of events to pause (an in-place rewrite truncates first)."""
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline and not self._stopping.is_set():
            self._dirty.clear()
            if not self._dirty.wait(quiet):
                return

    def _scan(self) -> None:
        for path in self._paths:
            try:
                digest = self._digest(path)
            except SecretsBackendUnavailable as exc:
                log.warning("file_secret_unreadable", path=path, error=str(exc))
                continue
            if digest == self._digests[path]:
                continue
            self._digests[path] = digest
            log.info("file_secret_changed", path=path, deleted=digest is None)
            try:
                self._on_change(path)
            except Exception:
                log.exception("file_secret_on_change_failed", path=path)

    def _initial_digest(self, path: str) -> str | None:
        try:
            return self._digest(path)
        except SecretsBackendUnavailable as exc:
            log.warning("file_secret_unreadable", path=path, error=str(exc))
            return "unreadable"  # the first good read then counts as a change

    def _digest(self, path: str) -> str | None:
        try:
            return _digest(self._backend._read(path))
        except SecretNotFound:
            return None
