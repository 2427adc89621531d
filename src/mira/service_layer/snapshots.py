"""The versioned snapshot the supervisor commits to its workers: state + resolved secrets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mira.domain.config.loading import load_settings
from mira.domain.config.schema import to_dict
from mira.domain.config.secret_refs import parse_secret_ref
from mira.domain.secret_value import SecretValue
from mira.domain.state import Phase, RuntimeState, SecretStatus
from mira.service_layer.secret_cache import SecretCache

Snapshot = dict[str, Any]


def snapshot_key(state: RuntimeState, cache: SecretCache) -> tuple[Any, ...]:
    """Changes whenever what the workers serve from changes (cheap to compare)."""
    return (
        state.config_generation,
        state.phase,
        state.last_config_error,
        state.settings,
        tuple(sorted(state.secrets.items())),
        id(cache.values()),
    )


def build_snapshot(state: RuntimeState, cache: SecretCache) -> Snapshot:
    """What a worker needs to serve exactly as the supervisor decided (values included)."""
    return {
        "generation": state.config_generation,
        "phase": state.phase.value,
        "source": state.config_source,
        "last_error": list(state.last_config_error),
        "last_reload_at": state.last_reload_at,
        "settings": to_dict(state.settings) if state.settings is not None else None,
        "secret_status": {k: dataclasses.asdict(v) for k, v in state.secrets.items()},
        "secrets": {str(ref): value.reveal() for ref, value in cache.values().items()},
    }


def read_snapshot(data: Snapshot) -> tuple[RuntimeState, dict[Any, SecretValue]]:
    """The worker's side: the state to serve from and the values in use. Raises ValueError
    when the snapshot cannot be used (the prepare then fails and the change is aborted)."""
    settings = None
    if data["settings"] is not None:
        import orjson

        result = load_settings(orjson.dumps(data["settings"]).decode(), "snapshot", {})
        if result.settings is None:
            raise ValueError("; ".join(result.errors))
        settings = result.settings
    statuses: Mapping[str, SecretStatus] = MappingProxyType(
        {k: SecretStatus(**v) for k, v in data["secret_status"].items()}
    )
    state = RuntimeState(
        phase=Phase(data["phase"]),
        settings=settings,
        config_generation=data["generation"],
        config_source=data["source"],
        last_reload_at=data["last_reload_at"],
        last_config_error=tuple(data["last_error"]),
        secrets=statuses,
    )
    values: dict[Any, SecretValue] = {}
    for text, value in data["secrets"].items():
        ref = parse_secret_ref(text)
        if ref is None:
            raise ValueError("a secret reference in the snapshot is malformed")
        values[ref] = SecretValue(value)
    return state, values
