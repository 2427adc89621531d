"""Events: facts the runtime journals (past-tense names). Never carry secret values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mira.domain.config.model import Settings


def _hidden() -> Any:
    return field(default=None, metadata={"log": False}, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Event:
    correlation_id: str
    at: float

    @property
    def name(self) -> str:
        return type(self).__name__

    def log_fields(self) -> dict[str, Any]:
        """Fields for the structured log line (large or nested values left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("log", True) and f.name not in ("correlation_id", "at")
        }


@dataclass(frozen=True, kw_only=True)
class ConfigLoaded(Event):
    source: str
    generation: int
    settings: Settings = _hidden()


@dataclass(frozen=True, kw_only=True)
class ConfigChanged(Event):
    source: str
    generation: int
    changed_keys: tuple[str, ...]
    restart_required: tuple[str, ...] = ()
    settings: Settings = _hidden()
    previous: Settings = _hidden()


@dataclass(frozen=True, kw_only=True)
class ConfigRejected(Event):
    source: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ConfigUnchanged(Event):
    source: str


@dataclass(frozen=True, kw_only=True)
class StartupFailed(Event):
    reasons: tuple[str, ...]
    exit_code: int = 1


@dataclass(frozen=True, kw_only=True)
class ServiceReady(Event):
    generation: int


@dataclass(frozen=True, kw_only=True)
class ShutdownRequested(Event):
    signal: str
    phase: str


@dataclass(frozen=True, kw_only=True)
class DrainStarted(Event):
    drain_delay: float
    timeout: float


@dataclass(frozen=True, kw_only=True)
class ShutdownForced(Event):
    signal: str


@dataclass(frozen=True, kw_only=True)
class ListenerClosed(Event):
    pass


@dataclass(frozen=True, kw_only=True)
class Drained(Event):
    duration: float


@dataclass(frozen=True, kw_only=True)
class DrainTimedOut(Event):
    abandoned: int
    duration: float


@dataclass(frozen=True, kw_only=True)
class HookFailed(Event):
    hook: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    exit_code: int
    phase_durations: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class SecretLoaded(Event):
    secret: str
    fingerprint: str
    version: str | None
    backend: str


@dataclass(frozen=True, kw_only=True)
class SecretRefreshed(Event):
    """Fetched again, unchanged."""

    secret: str
    fingerprint: str
    version: str | None
    backend: str


@dataclass(frozen=True, kw_only=True)
class SecretRotated(Event):
    secret: str
    fingerprint: str
    previous_fingerprint: str
    version: str | None
    backend: str


@dataclass(frozen=True, kw_only=True)
class SecretRefreshFailed(Event):
    secret: str
    reason: str
    consecutive_failures: int
    backend: str
