"""decide(command, state) -> events: every business rule of the runtime, pure."""

from __future__ import annotations

from dataclasses import replace

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain import lifecycle, secret_rules
from mira.domain.config.loading import changed_keys, restart_required
from mira.domain.config.model import Settings
from mira.domain.lifecycle import EXIT_CONFIG, Meta
from mira.domain.state import Phase, RuntimeState


def decide(command: cmd.Command, state: RuntimeState) -> list[ev.Event]:
    """The events that `command` causes in `state` (an empty list: nothing happens)."""
    meta: Meta = {"correlation_id": command.correlation_id, "at": command.at}
    match command:
        case cmd.ApplyConfig():
            return _apply_config(command, state, meta)
        case cmd.RecordSecretFetch(fetch=fetch, backend=backend):
            return secret_rules.fetched(fetch, backend, state, meta, _referenced(state))
        case cmd.RecordSecretFailure(failure=failure, backend=backend):
            return secret_rules.failed(failure, backend, state, meta, _referenced(state))
        case cmd.RecordRolloutFailed(generation=g, reason=why):
            if state.rollback is None or state.config_generation != g:
                return []
            old_generation, old_settings = state.rollback
            source = state.config_source or "config"
            return [
                ev.ConfigRejected(source=source, reasons=(f"{source}: {why}",), **meta),
                ev.ConfigRolledBack(generation=old_generation, settings=old_settings, **meta),
            ]
    return lifecycle.decide(command, state, meta)


def _referenced(state: RuntimeState) -> frozenset[str]:
    return secret_rules.referenced(state.settings) if state.settings is not None else frozenset()


def _apply_config(c: cmd.ApplyConfig, state: RuntimeState, meta: Meta) -> list[ev.Event]:
    starting = state.settings is None
    reasons, settings = c.parsed.errors, c.parsed.settings
    if settings is not None and (c.failures or c.problems):
        reasons = tuple(
            f"{c.source}: {ref}: {f.reason}"
            for f in c.failures
            for ref in f.references or (f.name,)
        ) + tuple(f"{c.source}: {p}" for p in c.problems)
        settings = None
    if settings is None:
        discarded = secret_rules.discard_all(c.fetches, "its configuration was rejected", meta)
        if starting:
            return [ev.StartupFailed(reasons=reasons, exit_code=EXIT_CONFIG, **meta), *discarded]
        return [ev.ConfigRejected(source=c.source, reasons=reasons, **meta), *discarded]
    names = secret_rules.referenced(settings)
    if starting:
        return [
            *secret_rules.fetched_all(c.fetches, c.backend, state, meta, names),
            ev.ConfigLoaded(source=c.source, generation=1, settings=settings, **meta),
        ]
    assert state.settings is not None
    changed = changed_keys(state.settings, settings)
    restart = restart_required(changed)
    if changed and restart == changed:
        discarded = secret_rules.discard_all(c.fetches, "its configuration needs a restart", meta)
        return [
            ev.ConfigNeedsRestart(source=c.source, restart_required=restart, **meta),
            *discarded,
        ]
    # Secrets first: their values are in use before anything reacts to the new configuration.
    secrets = secret_rules.fetched_all(c.fetches, c.backend, state, meta, names)
    if not changed:
        return [*secrets, ev.ConfigUnchanged(source=c.source, **meta)]
    if restart:
        # A restart-only change is reported, never applied: keep the live server settings.
        settings = _keep_live(settings, state.settings)
    return [
        *secrets,
        ev.ConfigChanged(
            source=c.source,
            generation=state.last_generation + 1,
            changed_keys=changed,
            restart_required=restart,
            settings=settings,
            previous=state.settings,
            **meta,
        ),
    ]


def _keep_live(new: Settings, live: Settings) -> Settings:
    """Restart-only settings (the listener, the secrets backend) stay as the process started."""
    s, old = new.secrets, live.secrets
    secrets = replace(
        s, backend=old.backend, vault=old.vault, kubernetes=old.kubernetes, file=old.file
    )
    return replace(new, server=live.server, secrets=secrets)


__all__ = ["Phase", "decide"]
