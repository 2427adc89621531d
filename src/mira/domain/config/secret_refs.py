"""`secret://path:key` references found in settings values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mira.domain.config.schema import flatten, to_dict

PREFIX = "secret://"
#: Longest reference accepted: references travel into errors, logs and metrics labels.
MAX_REF_CHARS = 512


@dataclass(frozen=True, order=True)
class SecretRef:
    path: str
    key: str | None = None

    @property
    def name(self) -> str:
        """The secret's name as callbacks and metrics know it (the path)."""
        return self.path

    def __str__(self) -> str:
        return f"{PREFIX}{self.path}:{self.key}" if self.key else f"{PREFIX}{self.path}"


def parse_secret_ref(value: Any) -> SecretRef | None:
    """`secret://a/b:key` -> SecretRef('a/b', 'key'); anything else -> None."""
    if not isinstance(value, str) or not value.startswith(PREFIX) or len(value) > MAX_REF_CHARS:
        return None
    body = value[len(PREFIX) :]
    path, sep, key = body.rpartition(":")
    if not sep:
        path, key = body, ""
    if not path or (sep and not key):
        return None
    return SecretRef(path, key or None)


def _leaves(settings: Any) -> dict[str, Any]:
    """Key path -> value, with list items as `path[i]` (server.api_tokens holds references)."""
    out: dict[str, Any] = {}
    for path, value in flatten(to_dict(settings)).items():
        if isinstance(value, list):
            out.update({f"{path}[{i}]": item for i, item in enumerate(value)})
        else:
            out[path] = value
    return out


def invalid_refs(settings: Any) -> list[str]:
    """Values that start with secret:// but are not a well-formed reference."""
    return [
        f"{path}: malformed secret reference (expected secret://path:key or secret://path, "
        f"at most {MAX_REF_CHARS} characters)"
        for path, value in _leaves(settings).items()
        if isinstance(value, str) and value.startswith(PREFIX) and parse_secret_ref(value) is None
    ]


def find_refs(settings: Any) -> dict[str, SecretRef]:
    """Key path -> reference, for every settings value that is a secret reference."""
    return {
        path: ref
        for path, value in _leaves(settings).items()
        if (ref := parse_secret_ref(value)) is not None
    }
