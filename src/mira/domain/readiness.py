"""What /ready answers, decided from the runtime state (pure)."""

from __future__ import annotations

from typing import Any

from mira.domain.state import SHUTTING_DOWN, Phase, RuntimeState


def readiness(state: RuntimeState, now: float) -> tuple[bool, dict[str, Any]]:
    """(ready?, body). Never includes secret values."""
    body: dict[str, Any] = {"status": state.phase.value}
    reasons: list[str] = []
    if state.phase is Phase.STARTING:
        reasons.append("start-up has not finished")
    elif state.phase in SHUTTING_DOWN:
        reasons.append(f"shutting down ({state.shutdown_signal or 'requested'})")
    elif state.phase is Phase.STOPPED:
        reasons.append("stopped")
    body["config"] = {
        "generation": state.config_generation,
        "source": state.config_source,
        "last_error": list(state.last_config_error) or None,
    }
    secrets, stale = _secrets(state, now)
    if secrets:
        body["secrets"] = secrets
    settings = state.settings
    if stale and settings is not None and settings.secrets.stale_makes_unready:
        reasons.extend(f"secret {name} is {secrets[name]['state']}" for name in stale)
    if reasons:
        body["reasons"] = reasons
    ok = state.phase is Phase.READY and not reasons
    if ok:
        body["status"] = "ready"
    return ok, body


def _secrets(state: RuntimeState, now: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    settings = state.settings
    if settings is None:
        return {}, []
    stale_after = settings.secrets.stale_after or 2 * settings.secrets.refresh_interval
    out: dict[str, dict[str, Any]] = {}
    unhealthy: list[str] = []
    for name, status in sorted(state.secrets.items()):
        if status.fetched_at is None:
            out[name] = {"state": "missing", "error": status.last_error}
            unhealthy.append(name)
            continue
        age = max(0.0, now - status.fetched_at)
        stale = status.failures > 0 or (settings.secrets.auto_refresh and age > stale_after)
        out[name] = {
            "state": "stale" if stale else "fresh",
            "age_seconds": round(age, 1),
            "version": status.version,
        }
        if status.last_error and status.failures:
            out[name]["error"] = status.last_error
        if stale:
            unhealthy.append(name)
    return out, unhealthy
