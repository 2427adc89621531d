"""Commands: stimuli and facts that adapters hand the runtime (imperative or fact names).

Time and ids come inside; no command carries a secret value (fetched values wait in the
service layer's staging, named here by their sequence number only).
"""

from __future__ import annotations

from dataclasses import dataclass

from mira.domain.config.loading import LoadResult


@dataclass(frozen=True, kw_only=True)
class Command:
    correlation_id: str
    at: float  # wall-clock seconds since the epoch, read by the adapter


@dataclass(frozen=True)
class SecretFetch:
    """One read of one secret (every key the config references), staged under `seq`.

    `seq` is taken before the read starts: a read that began earlier has a lower number, so a
    slow read of an old value can be told from a newer one that finished first.
    """

    name: str
    fingerprint: str
    version: str | None
    seq: int


@dataclass(frozen=True)
class SecretFailure:
    """A read of secret `name` that failed; `references` as written in the config."""

    name: str
    reason: str
    seq: int
    references: tuple[str, ...] = ()


# -- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ApplyConfig(Command):
    """Make this parsed file content the live configuration (or reject it).

    `fetches` are the staged reads of the secrets it references; `failures` the references
    that could not be read, and `problems` what checking its effects before applying them
    found (a log file that cannot be written): either rejects the config.
    """

    source: str
    parsed: LoadResult
    fetches: tuple[SecretFetch, ...] = ()
    failures: tuple[SecretFailure, ...] = ()
    problems: tuple[str, ...] = ()
    backend: str = "env"


@dataclass(frozen=True, kw_only=True)
class RecordRolloutFailed(Command):
    """The workers could not all prepare this configuration generation; none committed it."""

    generation: int
    reason: str


# -- secrets -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RecordSecretFetch(Command):
    """A refresh or a pushed change read a secret; its value waits in staging under seq."""

    fetch: SecretFetch
    backend: str = "env"


@dataclass(frozen=True, kw_only=True)
class RecordSecretFailure(Command):
    failure: SecretFailure
    backend: str = "env"


# -- lifecycle ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MarkReady(Command):
    """Start-up finished: serve traffic."""


@dataclass(frozen=True, kw_only=True)
class AbortStartup(Command):
    """Start-up cannot go on: `cause` is "config" (a configuration error) or "runtime"."""

    reason: str
    cause: str = "runtime"


@dataclass(frozen=True, kw_only=True)
class RequestShutdown(Command):
    """A stop signal (or an embedding app's stop) arrived."""

    signal: str


@dataclass(frozen=True, kw_only=True)
class DrainDelayElapsed(Command):
    """The service kept serving for the drain delay the domain asked for."""

    seconds: float


@dataclass(frozen=True, kw_only=True)
class RecordListenerClosed(Command):
    """The server stopped accepting connections."""

    seconds: float


@dataclass(frozen=True, kw_only=True)
class RequestsDrained(Command):
    """In-flight requests finished, or the deadline passed with `abandoned` still running."""

    abandoned: int
    seconds: float


@dataclass(frozen=True, kw_only=True)
class HooksFinished(Command):
    """Every cleanup hook ran (or was skipped); `failures` as (hook, reason)."""

    failures: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
