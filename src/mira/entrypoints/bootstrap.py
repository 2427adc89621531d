"""Validate a config file the way start-up does, and prepare a container from it."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from dependency_injector import providers

from mira.adapters.config_file import ConfigSnapshot, read_config_file
from mira.adapters.structlog_logging import LogPipeline
from mira.container import Container
from mira.domain.config.loading import load_settings
from mira.domain.config.model import Settings
from mira.utils.secrets_manager import current_container, set_current_container

#: Singletons that depend on the settings' secrets backend: rebuilt when a container that was
#: used before start-up (get_secrets_manager() at import time) gets its real settings.
_BACKEND_BOUND = ("secret_fetcher", "secrets")


class BootstrapError(Exception):
    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Boot:
    container: Container
    settings: Settings
    snapshot: ConfigSnapshot
    boot_id: str


def validate(path: str, environ: Mapping[str, str]) -> tuple[Settings, ConfigSnapshot]:
    """Everything start-up checks before it serves (also `mira config check`): the file, the
    schema and the environment, and that the secrets backend can be built from them."""
    snapshot = read_config_file(path)
    if snapshot.text is None:
        raise BootstrapError(f"configuration error:\n  - {snapshot.error}")
    result = load_settings(snapshot.text, path, environ)
    if result.settings is None:
        listed = "\n".join(f"  - {e}" for e in result.errors)
        raise BootstrapError(f"configuration error ({len(result.errors)}):\n{listed}")
    probe = Container()
    _configure(probe, result.settings, path, environ)
    build_backend(probe, result.settings)
    probe.secrets_backend().close()
    return result.settings, snapshot


def build_backend(container: Container, settings: Settings) -> None:
    """Build the configured secrets backend (no connection yet); a clear error if it can't."""
    try:
        container.secrets_backend()
    except Exception as exc:  # a kubeconfig that is missing, no cluster, a bad class path
        text = str(exc).strip() or type(exc).__name__
        if not text.startswith("secrets."):
            text = f"secrets.backend {settings.secrets.backend!r}: {text}"
        raise BootstrapError(f"configuration error:\n  - {text}") from None


def _configure(
    container: Container, settings: Settings, path: str, environ: Mapping[str, str]
) -> None:
    container.settings.override(providers.Object(settings))
    container.config_path.override(providers.Object(path))
    container.environ.override(providers.Object(environ))


def bootstrap(
    path: str,
    environ: Mapping[str, str] | None = None,
    container: Container | None = None,
    configure_logs: bool = True,
) -> Boot:
    """Validate the file, configure logging, prepare the container (nothing started)."""
    env = os.environ if environ is None else environ
    settings, snapshot = validate(path, env)
    boot_id = str(uuid.uuid4())
    container = container or current_container()
    _configure(container, settings, path, env)
    container.boot_id.override(providers.Object(boot_id))
    for name in _BACKEND_BOUND:
        getattr(container, name).reset()
    for backend in container.secrets_backend.providers.values():
        if isinstance(backend, providers.Singleton):
            backend.reset()
    if configure_logs:
        try:
            container.logging.init()
        except OSError as exc:
            raise BootstrapError(f"logging.file: {exc.strerror or exc}") from None
    else:  # the embedding app owns logging: Mira's lines go through an unconfigured pipeline
        container.logging.override(providers.Singleton(LogPipeline, redactor=container.redactor))
    build_backend(container, settings)
    set_current_container(container)
    return Boot(container, settings, snapshot, boot_id)


def fail(message: str) -> None:
    print(f"mira: {message}", file=sys.stderr, flush=True)
