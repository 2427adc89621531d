"""A resolved secret whose str and repr never show the value."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

MASK: Final = "**********"


def fingerprint(parts: Iterable[tuple[str, str]]) -> str:
    """A short, non-reversible identifier of (key, value) pairs, safe to log and journal."""
    return hashlib.sha256(repr(sorted(parts)).encode("utf-8")).hexdigest()[:12]


class SecretValue:
    """Holds one secret string; only `reveal()` gives it back."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretValue holds a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A short, non-reversible identifier of the value (safe to log)."""
        return fingerprint([("", self._value)])

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"SecretValue('{MASK}')"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretValue", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretValue cannot be pickled")
