"""Ports: the interfaces adapters implement. Standard library only."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


class SecretsError(Exception):
    """Base of secret backend failures. Messages name references, never values."""


class SecretNotFound(SecretsError):
    """The backend answered, and the secret or key does not exist."""


class SecretsBackendUnavailable(SecretsError):
    """The backend could not be reached or refused the request."""


class SecretsBackend(ABC):
    """Where secrets come from. Subclass it for a custom backend (see the guide's AWS example).

    `get_secret(path)` returns the whole secret (a mapping of key to value, or a plain string);
    `get_secret(path, key)` returns the one value as a string. Raise `SecretNotFound` or
    `SecretsBackendUnavailable`; never put a secret value into an exception message.
    """

    #: short name used in metrics labels and logs
    name: str = "custom"

    @abstractmethod
    def get_secret(self, path: str, key: str | None = None) -> Any:
        """Return the secret at `path` (or its `key`)."""

    def watch(self, paths: Sequence[str], on_change: Callable[[str], None]) -> Callable[[], None]:
        """Start pushing changes of `paths` (call `on_change(path)`); return a stop function.

        Backends without push notifications keep this default (no-op); rotation then relies on
        polling with `secrets.refresh_interval`.
        """
        return lambda: None

    def check(self) -> str:
        """Verify the backend is reachable and authorised; return a one-line status."""
        return "ok"

    def start(self) -> None:
        """Start background work (token renewal, connection pools) once the service runs."""

    def get_secret_version(self, path: str) -> str | None:
        """The secret's current version where the backend tracks versions, else None."""
        return None

    def token_ttl_seconds(self) -> float | None:
        """Seconds left on the backend's own credential: +inf never expires, None unknown."""
        return None

    def close(self) -> None:
        """Release connections and threads."""


@runtime_checkable
class EventJournal(Protocol):
    """Append-only store of domain events."""

    def append(self, event: object) -> None: ...

    def read(self, since: int = 0) -> list[object]: ...

    def flush(self) -> None: ...


class Clock(Protocol):
    """Wall and monotonic time for adapters (the domain receives time inside commands)."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class IdGenerator(Protocol):
    def new_id(self) -> str: ...


class StateView(Protocol):
    """What the web adapter reads: the runtime state, and whether its writer still answers
    (the bus in one process; the committed snapshot in a worker process)."""

    @property
    def state(self) -> Any: ...

    def stalled(self, bound: float) -> str | None: ...


class Server(Protocol):
    """The HTTP engine: binds, serves, and drains in the order the lifecycle decides."""

    def bind(self) -> tuple[str, int]: ...
    def serve_forever(self) -> None: ...
    def start_draining(self) -> None: ...
    def close_listener(self) -> None: ...
    def wait_drained(self, timeout: float) -> int: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    @property
    def in_flight(self) -> int: ...


class Snapshot(Protocol):
    """What the config file held at one read: its text, or why it could not be read."""

    @property
    def path(self) -> str: ...
    @property
    def text(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def digest(self) -> str: ...


class Watcher(Protocol):
    """Watches the config file; calls back with a Snapshot whenever its content changes."""

    def start(self) -> None: ...
    def stop(self, timeout: float = 2.0) -> None: ...
    def set_poll_interval(self, seconds: float) -> None: ...
    def check_now(self) -> None: ...


class WatcherFactory(Protocol):
    def __call__(
        self,
        path: str,
        on_snapshot: Callable[[Snapshot], None],
        *,
        poll_interval: float,
        debounce: float,
        initial_digest: str | None,
    ) -> Watcher: ...


MessageHandler = Callable[[Mapping[str, Any]], Any]
