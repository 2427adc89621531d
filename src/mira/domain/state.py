"""The runtime state: an immutable value folded from events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from mira.domain import events as ev
from mira.domain.config.model import Settings


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SecretStatus:
    fingerprint: str | None = None
    version: str | None = None
    fetched_at: float | None = None
    last_error: str | None = None
    failures: int = 0


@dataclass(frozen=True)
class RuntimeState:
    phase: Phase = Phase.STARTING
    settings: Settings | None = None
    config_generation: int = 0
    config_source: str | None = None
    last_reload_at: float | None = None
    last_config_error: tuple[str, ...] = ()
    secrets: Mapping[str, SecretStatus] = field(default_factory=lambda: MappingProxyType({}))
    shutdown_signal: str | None = None
    shutdown_started_at: float | None = None
    abandoned_requests: int = 0
    exit_code: int | None = None


def _with_secret(state: RuntimeState, name: str, status: SecretStatus) -> RuntimeState:
    return replace(state, secrets=MappingProxyType({**state.secrets, name: status}))


def evolve(state: RuntimeState, event: ev.Event) -> RuntimeState:
    """Apply one event to the state."""
    match event:
        case ev.ConfigLoaded(settings=s, generation=g, source=src):
            return replace(
                state, settings=s, config_generation=g, config_source=src, last_reload_at=event.at
            )
        case ev.ConfigChanged(settings=s, generation=g, source=src):
            return replace(
                state,
                settings=s,
                config_generation=g,
                config_source=src,
                last_reload_at=event.at,
                last_config_error=(),
            )
        case ev.ConfigRejected(reasons=reasons):
            return replace(state, last_config_error=reasons, last_reload_at=event.at)
        case ev.ConfigUnchanged():
            # Back to the live content after a rejected edit: the error is over.
            return replace(state, last_reload_at=event.at, last_config_error=())
        case ev.ServiceReady():
            return replace(state, phase=Phase.READY)
        case ev.ShutdownRequested(signal=sig):
            return replace(
                state, phase=Phase.DRAINING, shutdown_signal=sig, shutdown_started_at=event.at
            )
        case ev.DrainTimedOut(abandoned=n):
            return replace(state, abandoned_requests=n)
        case ev.Stopped(exit_code=code) | ev.StartupFailed(exit_code=code):
            return replace(state, phase=Phase.STOPPED, exit_code=code)
        case (
            ev.SecretLoaded(secret=name, fingerprint=fp, version=v)
            | ev.SecretRefreshed(secret=name, fingerprint=fp, version=v)
            | ev.SecretRotated(secret=name, fingerprint=fp, version=v)
        ):
            return _with_secret(state, name, SecretStatus(fp, v, event.at))
        case ev.SecretRefreshFailed(secret=name, reason=why, consecutive_failures=n):
            old = state.secrets.get(name, SecretStatus())
            return _with_secret(state, name, replace(old, last_error=why, failures=n))
    return state
