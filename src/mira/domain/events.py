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
class ConfigRolledBack(Event):
    """Back to the configuration the workers still serve (a rollout was aborted)."""

    generation: int
    settings: Settings = _hidden()


@dataclass(frozen=True, kw_only=True)
class ConfigNeedsRestart(Event):
    """Only restart-required keys changed: reported, nothing applied, generation unchanged."""

    source: str
    restart_required: tuple[str, ...]


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
    """Unready now; keep serving for `drain_delay` seconds, then report it elapsed."""

    drain_delay: float
    timeout: float


@dataclass(frozen=True, kw_only=True)
class ShutdownForced(Event):
    """A second stop signal during the shutdown: exit now with `exit_code`."""

    signal: str
    exit_code: int = 130


@dataclass(frozen=True, kw_only=True)
class ListenerClosing(Event):
    """Close the listener, then wait up to `timeout` seconds for in-flight requests."""

    timeout: float
    delayed: float = 0.0  # how long the drain delay really took


@dataclass(frozen=True, kw_only=True)
class ListenerClosed(Event):
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Drained(Event):
    duration: float


@dataclass(frozen=True, kw_only=True)
class DrainTimedOut(Event):
    abandoned: int
    duration: float


@dataclass(frozen=True, kw_only=True)
class HooksStarted(Event):
    """Run the cleanup hooks: each within `hook_timeout`, all within `hooks_timeout`."""

    hooks_timeout: float
    hook_timeout: float


@dataclass(frozen=True, kw_only=True)
class HookFailed(Event):
    hook: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Stopped(Event):
    exit_code: int
    phase_durations: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class SecretPromoted(Event):
    """A staged read becomes the value in use (its subclasses say how it relates to the last)."""

    secret: str
    fingerprint: str
    version: str | None
    backend: str
    seq: int


@dataclass(frozen=True, kw_only=True)
class SecretLoaded(SecretPromoted):
    """First read of a secret the live configuration references."""


@dataclass(frozen=True, kw_only=True)
class SecretRefreshed(SecretPromoted):
    """Fetched again, unchanged."""


@dataclass(frozen=True, kw_only=True)
class SecretRotated(SecretPromoted):
    previous_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class SecretFetchDiscarded(Event):
    """A staged read that will not be used: older than the one applied, or its config lost."""

    secret: str
    seq: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class SecretRefreshFailed(Event):
    secret: str
    reason: str
    consecutive_failures: int
    backend: str
    seq: int = 0


#: Events that always reach the log whatever `logging.level` is: what operators look for.
LIFECYCLE = (
    ConfigLoaded,
    ConfigChanged,
    ConfigRejected,
    ConfigNeedsRestart,
    ConfigRolledBack,
    StartupFailed,
    ServiceReady,
    ShutdownRequested,
    DrainStarted,
    ShutdownForced,
    ListenerClosed,
    Drained,
    DrainTimedOut,
    HookFailed,
    Stopped,
    SecretRotated,
    SecretRefreshFailed,
)
