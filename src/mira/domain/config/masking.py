"""Settings as a dict safe to print: secret keys masked unless they hold a reference."""

from __future__ import annotations

from typing import Any

from mira.domain.config.model import Settings
from mira.domain.config.schema import secret_paths, to_dict
from mira.domain.config.secret_refs import parse_secret_ref
from mira.domain.secret_value import MASK

_SECRET_PATHS = secret_paths(Settings)


def masked_dict(settings: Settings, mask_refs: bool = False) -> dict[str, Any]:
    """`to_dict(settings)` with literal secret values replaced by a mask."""
    data: dict[str, Any] = to_dict(settings)
    for path in _SECRET_PATHS:
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        value = node.get(leaf)
        if value is None:
            continue
        if isinstance(value, list):  # server.api_tokens: mask each literal, keep references
            node[leaf] = [v if not mask_refs and parse_secret_ref(v) else MASK for v in value]
        elif mask_refs or parse_secret_ref(value) is None:
            node[leaf] = MASK
    return data
