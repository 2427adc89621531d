"""The runtime state: an immutable value folded from events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from mira.domain import events as ev
from mira.domain.config.model import Settings
from mira.domain.config.secret_refs import find_refs


class Phase(StrEnum):
    """STARTING -> READY -> DRAINING -> CLOSING -> HOOKS -> STOPPED (or STARTING -> STOPPED)."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSING = "closing"
    HOOKS = "hooks"
    STOPPED = "stopped"


#: Phases in which the service shuts down (unready; a second stop signal forces the exit).
SHUTTING_DOWN = frozenset({Phase.DRAINING, Phase.CLOSING, Phase.HOOKS})


@dataclass(frozen=True)
class SecretStatus:
    fingerprint: str | None = None
    version: str | None = None
    fetched_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    #: sequence number of the read in use (or of the last failed read): older reads are ignored
    seq: int = 0


@dataclass(frozen=True)
class RuntimeState:
    phase: Phase = Phase.STARTING
    settings: Settings | None = None
    config_generation: int = 0
    #: the highest generation ever decided (a rolled-back one is never reused)
    last_generation: int = 0
    #: the generation and settings before the last change, while a rollout may still abort it
    rollback: tuple[int, Settings] | None = None
    config_source: str | None = None
    last_reload_at: float | None = None
    last_config_error: tuple[str, ...] = ()
    secrets: Mapping[str, SecretStatus] = field(default_factory=lambda: MappingProxyType({}))
    shutdown_signal: str | None = None
    shutdown_started_at: float | None = None
    #: the phase the stop signal found (a drain delay only makes sense once ready)
    shutdown_from: Phase | None = None
    abandoned_requests: int = 0
    phase_durations: tuple[tuple[str, float], ...] = ()
    exit_code: int | None = None


def _with_secret(state: RuntimeState, name: str, status: SecretStatus) -> RuntimeState:
    return replace(state, secrets=MappingProxyType({**state.secrets, name: status}))


def _live_secrets(state: RuntimeState, settings: Settings) -> Mapping[str, SecretStatus]:
    """Only the secrets the live configuration references are tracked."""
    names = {ref.path for ref in find_refs(settings).values()}
    return MappingProxyType({k: v for k, v in state.secrets.items() if k in names})


def _timed(state: RuntimeState, phase: str, seconds: float) -> tuple[tuple[str, float], ...]:
    return (*state.phase_durations, (phase, round(seconds, 4)))


def evolve(state: RuntimeState, event: ev.Event) -> RuntimeState:
    """Apply one event to the state."""
    match event:
        case ev.ConfigLoaded(settings=s, generation=g, source=src):
            return replace(
                state,
                settings=s,
                config_generation=g,
                last_generation=g,
                config_source=src,
                last_reload_at=event.at,
                secrets=_live_secrets(state, s),
            )
        case ev.ConfigChanged(settings=s, generation=g, source=src):
            previous = state.settings
            return replace(
                state,
                settings=s,
                config_generation=g,
                last_generation=g,
                rollback=(state.config_generation, previous) if previous is not None else None,
                config_source=src,
                last_reload_at=event.at,
                last_config_error=(),
                secrets=_live_secrets(state, s),
            )
        case ev.ConfigRolledBack(settings=s, generation=g):
            return replace(
                state,
                settings=s,
                config_generation=g,
                rollback=None,
                secrets=_live_secrets(state, s),
            )
        case ev.ConfigRejected(reasons=reasons):
            return replace(state, last_config_error=reasons, last_reload_at=event.at)
        case ev.ConfigUnchanged() | ev.ConfigNeedsRestart():
            # Back to the live content after a rejected edit: the error is over.
            return replace(state, last_reload_at=event.at, last_config_error=())
        case ev.ServiceReady():
            return replace(state, phase=Phase.READY)
        case ev.ShutdownRequested(signal=sig):
            return replace(
                state,
                phase=Phase.DRAINING,
                shutdown_signal=sig,
                shutdown_started_at=event.at,
                shutdown_from=state.phase,
            )
        case ev.ListenerClosing(delayed=s):
            return replace(
                state, phase=Phase.CLOSING, phase_durations=_timed(state, "drain_delay", s)
            )
        case ev.ListenerClosed(seconds=s):
            return replace(state, phase_durations=_timed(state, "close_listener", s))
        case ev.Drained(duration=d):
            return replace(state, phase_durations=_timed(state, "drain", d))
        case ev.DrainTimedOut(abandoned=n, duration=d):
            return replace(state, abandoned_requests=n, phase_durations=_timed(state, "drain", d))
        case ev.HooksStarted():
            return replace(state, phase=Phase.HOOKS)
        case ev.Stopped(exit_code=code, phase_durations=d):
            return replace(state, phase=Phase.STOPPED, exit_code=code, phase_durations=d)
        case ev.StartupFailed(exit_code=code) | ev.ShutdownForced(exit_code=code):
            return replace(state, phase=Phase.STOPPED, exit_code=code)
        case ev.SecretPromoted(secret=name, fingerprint=fp, version=v, seq=seq):
            return _with_secret(state, name, SecretStatus(fp, v, event.at, seq=seq))
        case ev.SecretRefreshFailed(secret=name, reason=why, consecutive_failures=n, seq=seq):
            old = state.secrets.get(name, SecretStatus())
            return _with_secret(
                state, name, replace(old, last_error=why, failures=n, seq=max(seq, old.seq))
            )
    return state
