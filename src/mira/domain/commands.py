"""Commands: what adapters ask the runtime to do (imperative names). Time and IDs come inside."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Command:
    correlation_id: str
    at: float  # wall-clock seconds since the epoch, read by the adapter


@dataclass(frozen=True, kw_only=True)
class ApplyConfig(Command):
    """Validate this file content and make it the live configuration."""

    source: str
    text: str | None
    read_error: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: references that could not be resolved: (reference, reason without any value)
    unresolved: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class MarkReady(Command):
    """Start-up finished: serve traffic."""


@dataclass(frozen=True, kw_only=True)
class RequestShutdown(Command):
    """A stop signal arrived."""

    signal: str


@dataclass(frozen=True, kw_only=True)
class RecordListenerClosed(Command):
    """The server stopped accepting connections."""


@dataclass(frozen=True, kw_only=True)
class RecordDrainResult(Command):
    """In-flight requests finished, or the deadline passed with `abandoned` still running."""

    abandoned: int
    duration: float


@dataclass(frozen=True, kw_only=True)
class RecordHookFailure(Command):
    hook: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RecordStopped(Command):
    exit_code: int
    phase_durations: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class RecordSecretFetch(Command):
    """A secret was read from its backend; only its fingerprint travels, never the value."""

    name: str
    fingerprint: str
    version: str | None = None
    backend: str = "env"


@dataclass(frozen=True, kw_only=True)
class RecordSecretFailure(Command):
    name: str
    reason: str
    backend: str = "env"
