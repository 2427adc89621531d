"""Config subscriptions: the guide's register_reload_callback, and per-key callbacks."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from typing import Any

from mira.domain.config.masking import masked_dict
from mira.domain.config.model import Settings
from mira.service_layer.callbacks import call_isolated

FAILED = "Configuration callback failed"
ReloadCallback = Callable[[dict[str, Any]], None]
KeyCallback = Callable[[Any], None]


class ConfigSubscriptions:
    """Whole-config callbacks (the guide's register_reload_callback) and per-key ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reload: tuple[ReloadCallback, ...] = ()
        self._keys: tuple[tuple[str, KeyCallback], ...] = ()

    def register_reload_callback(self, callback: ReloadCallback) -> None:
        """`callback(new_config)` with the new config as a dict (secret values masked)."""
        if not callable(callback):
            raise TypeError(f"register_reload_callback needs a callable, got {callback!r}")
        with self._lock:
            self._reload = (*self._reload, callback)

    def subscribe(self, key: str, callback: KeyCallback) -> None:
        """`callback(new_value)` when `key` (e.g. "logging.level") or anything under it changes."""
        if not isinstance(key, str) or not key.strip("."):
            raise ValueError(f"subscribe needs a dotted key such as 'logging.level', got {key!r}")
        if not callable(callback):
            raise TypeError(f"subscribe({key!r}) needs a callable, got {callback!r}")
        with self._lock:
            self._keys = (*self._keys, (key.strip("."), callback))

    def notify(self, changed: tuple[str, ...], settings: Settings, whole: bool = True) -> None:
        """Run every whole-config callback (unless not `whole`: a secret rotated, the config
        itself did not change), and the key callbacks whose key is in `changed`."""
        if not changed:
            return
        data = masked_dict(settings)
        for callback in self._reload if whole else ():
            # Each callback gets its own copy: one that mutates its dict cannot affect the next.
            call_isolated(callback, copy.deepcopy(data), FAILED, key=None)
        for key, callback in self._keys:
            if any(_covers(key, c) for c in changed):
                call_isolated(callback, copy.deepcopy(_lookup(data, key)), FAILED, key=key)


def _covers(key: str, changed: str) -> bool:
    """A subscription to `key` hears about `key` itself and every key under it."""
    return changed == key or changed.startswith(key + ".")


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
