"""The guide's secrets API: `get_secrets_manager()` and the `SecretsBackend` base class."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable
from mira.service_layer.secrets import SecretsManager

if TYPE_CHECKING:
    from mira.container import Container

_lock = threading.Lock()
_current: Container | None = None


def set_current_container(container: Container) -> None:
    """Called by the entrypoints and MiraApplication: the container the service runs on."""
    global _current
    with _lock:
        _current = container


def current_container() -> Container:
    """The running service's container; a default one (env backend) when none exists yet."""
    global _current
    with _lock:
        if _current is None:
            from mira.container import Container

            _current = Container()
        return _current


def get_secrets_manager() -> SecretsManager:
    """The secrets manager of the running service (the same object its runtime uses)."""
    manager: SecretsManager = current_container().secrets()
    return manager


__all__ = [
    "SecretNotFound",
    "SecretsBackend",
    "SecretsBackendUnavailable",
    "SecretsManager",
    "get_secrets_manager",
]
