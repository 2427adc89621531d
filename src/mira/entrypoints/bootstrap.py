"""Build a configured container from a config file path and the environment."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from dependency_injector import providers

from mira.adapters.config_file import ConfigSnapshot, read_config_file
from mira.adapters.structlog_logging import configure_logging
from mira.container import Container
from mira.domain.config.loading import load_settings
from mira.domain.config.model import Settings
from mira.utils.secrets_manager import current_container, set_current_container


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


def bootstrap(
    path: str,
    environ: Mapping[str, str] | None = None,
    container: Container | None = None,
    configure_logs: bool = True,
) -> Boot:
    """Read and validate the file, configure logging, prepare the container (nothing started)."""
    env = os.environ if environ is None else environ
    snapshot = read_config_file(path)
    if snapshot.text is None:
        raise BootstrapError(f"configuration error:\n  - {snapshot.error}")
    result = load_settings(snapshot.text, path, env)
    if result.settings is None:
        listed = "\n".join(f"  - {e}" for e in result.errors)
        raise BootstrapError(f"configuration error ({len(result.errors)}):\n{listed}")
    boot_id = str(uuid.uuid4())
    if configure_logs:
        try:
            configure_logging(result.settings.logging, default_correlation_id=boot_id)
        except OSError as exc:
            raise BootstrapError(f"logging.file: {exc.strerror or exc}") from None
    container = container or current_container()
    container.settings.override(providers.Object(result.settings))
    container.config_path.override(providers.Object(path))
    container.environ.override(providers.Object(env))
    # A manager made earlier by get_secrets_manager() keeps its callbacks but gets the backend
    # these settings choose.
    try:
        container.secrets().backend = container.secrets_backend()
    except ValueError as exc:
        raise BootstrapError(f"configuration error:\n  - {exc}") from None
    set_current_container(container)
    return Boot(container, result.settings, snapshot, boot_id)


def fail(message: str) -> None:
    print(f"mira: {message}", file=sys.stderr, flush=True)
