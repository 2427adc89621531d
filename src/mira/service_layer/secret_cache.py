"""The secret values in use: read from any thread, written only by the bus thread."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from mira.domain.config.secret_refs import SecretRef
from mira.domain.secret_value import SecretValue

#: Rotated-out values stay masked in logs for a while: late errors may still quote them.
RETIRED_KEPT = 64


class SecretCache:
    """Hot path: `get(text)` is one dict lookup. The writer replaces whole dicts."""

    def __init__(self, on_values: Callable[[Iterable[str]], None] | None = None) -> None:
        self._on_values = on_values or (lambda values: None)
        self._values: Mapping[SecretRef, SecretValue] = MappingProxyType({})
        self._by_text: dict[str, SecretValue] = {}
        self._retired: deque[str] = deque(maxlen=RETIRED_KEPT)

    def get(self, text: str | None) -> SecretValue | None:
        """The value for a config string: a resolved reference, or the literal itself."""
        if text is None:
            return None
        value = self._by_text.get(text)
        if value is not None:
            return value
        return None if text.startswith("secret://") else SecretValue(text)

    def refs(self) -> list[SecretRef]:
        return sorted(self._values)

    def values(self) -> Mapping[SecretRef, SecretValue]:
        """Every value in use (an immutable view; replaced, never changed, by the writer)."""
        return self._values

    def current(self, name: str) -> Any:
        """The secret's keys in use as {key: SecretValue}, or the SecretValue of a keyless ref."""
        keyed = {r.key: v for r, v in self._values.items() if r.path == name and r.key}
        if keyed:
            return keyed
        return self._values.get(SecretRef(name))

    # -- the bus thread only -----------------------------------------------------------------
    def promote(self, values: Mapping[SecretRef, SecretValue]) -> None:
        """Make these values the ones in use (the bus decided they are the newest)."""
        self._retired.extend(
            old.reveal()
            for ref, new in values.items()
            if (old := self._values.get(ref)) is not None and old != new
        )
        self._install({**self._values, **values})

    def retain(self, refs: Iterable[SecretRef]) -> None:
        """Forget values no live reference uses any more."""
        keep = set(refs)
        if keep >= self._values.keys():
            return
        self._retired.extend(v.reveal() for r, v in self._values.items() if r not in keep)
        self._install({r: v for r, v in self._values.items() if r in keep})

    def _install(self, values: dict[SecretRef, SecretValue]) -> None:
        self._values = MappingProxyType(values)
        # str(ref) is the reference as written: secret://path:key or secret://path
        self._by_text = {str(ref): v for ref, v in values.items()}
        self._on_values([*(v.reveal() for v in values.values()), *self._retired])
