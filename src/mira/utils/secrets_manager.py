"""The guide's secrets API: `get_secrets_manager()` and the `SecretsBackend` base class.

`get_secrets_manager()` is a thin facade over the running service's container: every call
goes to the container the service runs on (set by the entrypoints and MiraApplication), so an
object taken before start-up keeps working after it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable
from mira.domain.secret_value import SecretValue
from mira.service_layer.secrets import RefreshCallback, SecretsManager

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


class RunningSecrets:
    """What `get_secrets_manager()` returns: the running service's secrets, looked up per call."""

    def get(self, text: str | None) -> SecretValue | None:
        value: SecretValue | None = current_container().secret_cache().get(text)
        return value

    def current(self, name: str) -> Any:
        return current_container().secret_cache().current(name)

    def register_refresh_callback(self, name: str, callback: RefreshCallback) -> None:
        """Call `callback(new_value)` after secret `name` rotates (value masked when printed)."""
        current_container().secret_callbacks().register(name, callback)

    def refresh(self, names: list[str] | None = None) -> bool:
        """Re-read the live configuration's secrets now; True when every read succeeded."""
        return bool(self.manager.refresh(names))

    @property
    def manager(self) -> SecretsManager:
        manager: SecretsManager = current_container().secrets()
        return manager

    @property
    def backend(self) -> SecretsBackend:
        return self.manager.backend


def get_secrets_manager() -> RunningSecrets:
    """The secrets of the running service (the same values its runtime uses)."""
    return RunningSecrets()


__all__ = [
    "RunningSecrets",
    "SecretNotFound",
    "SecretsBackend",
    "SecretsBackendUnavailable",
    "SecretsManager",
    "get_secrets_manager",
]
