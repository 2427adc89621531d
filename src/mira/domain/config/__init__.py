"""Settings: schema, pure loading with env overrides, diffs and secret references."""

from mira.domain.config.loading import (
    ENV_FALLBACKS,
    ENV_OVERRIDES,
    LoadResult,
    changed_keys,
    load_settings,
    restart_required,
)
from mira.domain.config.model import Settings
from mira.domain.config.schema import iter_keys, to_dict
from mira.domain.config.secret_refs import SecretRef, find_refs, parse_secret_ref

__all__ = [
    "ENV_FALLBACKS",
    "ENV_OVERRIDES",
    "LoadResult",
    "SecretRef",
    "Settings",
    "changed_keys",
    "find_refs",
    "iter_keys",
    "load_settings",
    "parse_secret_ref",
    "restart_required",
    "to_dict",
]
