"""decide(command, state) -> events: every business rule of the runtime, pure."""

from __future__ import annotations

from dataclasses import replace
from typing import TypedDict

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import changed_keys, load_settings, restart_required
from mira.domain.config.model import Settings
from mira.domain.state import Phase, RuntimeState


class Meta(TypedDict):
    correlation_id: str
    at: float


def decide(command: cmd.Command, state: RuntimeState) -> list[ev.Event]:
    """The events that `command` causes in `state` (an empty list: nothing happens)."""
    meta: Meta = {"correlation_id": command.correlation_id, "at": command.at}
    match command:
        case cmd.ApplyConfig():
            return _apply_config(command, state, meta)
        case cmd.MarkReady():
            if state.phase is Phase.STARTING and state.settings is not None:
                return [ev.ServiceReady(generation=state.config_generation, **meta)]
            return []
        case cmd.RequestShutdown(signal=sig):
            return _request_shutdown(sig, state, meta)
        case cmd.RecordListenerClosed():
            return [ev.ListenerClosed(**meta)] if state.phase is Phase.DRAINING else []
        case cmd.RecordDrainResult(abandoned=0, duration=d):
            return [ev.Drained(duration=d, **meta)]
        case cmd.RecordDrainResult(abandoned=n, duration=d):
            return [ev.DrainTimedOut(abandoned=n, duration=d, **meta)]
        case cmd.RecordHookFailure(hook=h, reason=r):
            return [ev.HookFailed(hook=h, reason=r, **meta)]
        case cmd.RecordStopped(exit_code=code, phase_durations=d):
            if state.phase is Phase.STOPPED:
                return []
            return [ev.Stopped(exit_code=code, phase_durations=d, **meta)]
        case cmd.RecordSecretFetch():
            return _secret_fetched(command, state, meta)
        case cmd.RecordSecretFailure(name=name, reason=why, backend=b):
            failures = state.secrets[name].failures + 1 if name in state.secrets else 1
            return [
                ev.SecretRefreshFailed(
                    secret=name, reason=why, consecutive_failures=failures, backend=b, **meta
                )
            ]
    raise TypeError(f"unknown command {type(command).__name__}")


def _apply_config(c: cmd.ApplyConfig, state: RuntimeState, meta: Meta) -> list[ev.Event]:
    starting = state.settings is None
    if c.text is None:
        reasons: tuple[str, ...] = (c.read_error or f"{c.source}: could not be read",)
        settings: Settings | None = None
    else:
        result = load_settings(c.text, c.source, c.environ)
        reasons, settings = result.errors, result.settings
    if settings is not None and c.unresolved:
        reasons = tuple(f"{c.source}: {ref}: {why}" for ref, why in c.unresolved)
        settings = None
    if settings is None:
        if starting:
            return [ev.StartupFailed(reasons=reasons, exit_code=2, **meta)]
        return [ev.ConfigRejected(source=c.source, reasons=reasons, **meta)]
    if starting:
        return [ev.ConfigLoaded(source=c.source, generation=1, settings=settings, **meta)]
    assert state.settings is not None
    changed = changed_keys(state.settings, settings)
    if not changed:
        return [ev.ConfigUnchanged(source=c.source, **meta)]
    restart = restart_required(changed)
    if restart:
        # A restart-only change is reported, never applied: keep the live server settings.
        settings = _keep_live(settings, state.settings)
    return [
        ev.ConfigChanged(
            source=c.source,
            generation=state.config_generation + 1,
            changed_keys=changed,
            restart_required=restart,
            settings=settings,
            previous=state.settings,
            **meta,
        )
    ]


def _keep_live(new: Settings, live: Settings) -> Settings:
    """Restart-only settings (the listener, the secrets backend) stay as the process started."""
    s, old = new.secrets, live.secrets
    secrets = replace(
        s, backend=old.backend, vault=old.vault, kubernetes=old.kubernetes, file=old.file
    )
    return replace(new, server=live.server, secrets=secrets)


def _request_shutdown(sig: str, state: RuntimeState, meta: Meta) -> list[ev.Event]:
    if state.phase is Phase.DRAINING:
        return [ev.ShutdownForced(signal=sig, **meta)]
    if state.phase is Phase.STOPPED:
        return []
    phase = state.phase.value
    shutdown = (state.settings or Settings()).shutdown
    return [
        ev.ShutdownRequested(signal=sig, phase=phase, **meta),
        ev.DrainStarted(drain_delay=shutdown.drain_delay, timeout=shutdown.timeout, **meta),
    ]


def _secret_fetched(c: cmd.RecordSecretFetch, state: RuntimeState, meta: Meta) -> list[ev.Event]:
    known = state.secrets.get(c.name)
    if known is None or known.fingerprint is None:
        return [
            ev.SecretLoaded(
                secret=c.name,
                fingerprint=c.fingerprint,
                version=c.version,
                backend=c.backend,
                **meta,
            )
        ]
    if known.fingerprint == c.fingerprint:
        # The same value again: record its freshness (and a recovery after failures).
        return [
            ev.SecretRefreshed(
                secret=c.name,
                fingerprint=c.fingerprint,
                version=c.version,
                backend=c.backend,
                **meta,
            )
        ]
    return [
        ev.SecretRotated(
            secret=c.name,
            fingerprint=c.fingerprint,
            previous_fingerprint=known.fingerprint,
            version=c.version,
            backend=c.backend,
            **meta,
        )
    ]
