"""Fakes for embedding apps' tests: an in-memory secrets backend, a fake clock, fixed ids."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable


class InMemorySecretsBackend(SecretsBackend):
    """Secrets in a dict; `set()` rotates and notifies watchers; `fail()` simulates an outage."""

    name = "memory"

    def __init__(self, secrets: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._secrets: dict[str, dict[str, str]] = {k: dict(v) for k, v in (secrets or {}).items()}
        self._versions: dict[str, int] = dict.fromkeys(self._secrets, 1)
        self._watchers: list[tuple[set[str], Callable[[str], None]]] = []
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str | None]] = []
        self.unavailable = False

    def set(self, path: str, values: Mapping[str, str], notify: bool = True) -> None:
        with self._lock:
            self._secrets[path] = dict(values)
            self._versions[path] = self._versions.get(path, 0) + 1
            watchers = [cb for paths, cb in self._watchers if path in paths]
        if notify:
            for callback in watchers:
                callback(path)

    def fail(self, unavailable: bool = True) -> None:
        self.unavailable = unavailable

    def get_secret(self, path: str, key: str | None = None) -> Any:
        self.calls.append((path, key))
        if self.unavailable:
            raise SecretsBackendUnavailable(f"secret {path}: backend unavailable (simulated)")
        with self._lock:
            secret = self._secrets.get(path)
            if secret is None:
                raise SecretNotFound(f"secret {path} does not exist")
            if key is None:
                return dict(secret)
            if key not in secret:
                raise SecretNotFound(f"secret {path} has no key {key}")
            return secret[key]

    def get_secret_version(self, path: str) -> str | None:
        version = self._versions.get(path)
        return None if version is None else str(version)

    def watch(self, paths: Sequence[str], on_change: Callable[[str], None]) -> Callable[[], None]:
        entry = (set(paths), on_change)
        self._watchers.append(entry)
        return lambda: self._watchers.remove(entry) if entry in self._watchers else None


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


class SequentialIds:
    """Predictable ids: id-1, id-2, ..."""

    def __init__(self, prefix: str = "id") -> None:
        self._counter = itertools.count(1)
        self._prefix = prefix

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


class RecordingJournal:
    """A journal that keeps everything, for assertions."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def append(self, event: object) -> None:
        self.events.append(event)

    def read(self, since: int = 0) -> list[object]:
        return self.events[since:]

    def flush(self) -> None:
        pass
