"""The guide's Python API: `MiraApplication('config.json')`, a thin facade over the container."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from mira.adapters.signals import StopSignals, catch_early_signals

if __name__ == "__main__":
    _EARLY = catch_early_signals()  # `python -m mira.app`: before the imports below

from mira.container import Container
from mira.entrypoints.bootstrap import BootstrapError, bootstrap
from mira.entrypoints.web import exit_now
from mira.entrypoints.web import run as run_until_stopped
from mira.service_layer.config_reload import ConfigReloader
from mira.service_layer.runtime import Runtime


class MiraApplication:
    """Embed Mira: process messages in-process, or start/stop the whole service."""

    def __init__(
        self,
        config_path: str = "config.json",
        container: Container | None = None,
        configure_logging: bool = True,
    ) -> None:
        boot = bootstrap(config_path, container=container, configure_logs=configure_logging)
        self.container = boot.container
        self.config_path = config_path
        self._boot = boot
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Any:
        runtime = self._runtime
        return runtime.settings if runtime and runtime.settings else self._boot.settings

    @property
    def hot_reload_config(self) -> ConfigReloader | None:
        """The hot-reload object, or None when `config.hot_reload` is off."""
        if not self.settings.config.hot_reload:
            return None
        reloader: ConfigReloader = self.container.reloader()
        return reloader

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = self.container.runtime()
        return self._runtime

    def process_message(self, message: dict[str, Any]) -> Any:
        """Run a message through the handler registry (as POST /api/v1/messages does)."""
        return self.container.message_handlers().process_message(message)

    def start(self) -> None:
        """Start serving in background threads; returns once ready (StartupError on failure)."""
        self.runtime.start(self._boot.snapshot)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Graceful stop: drain, run cleanup hooks; returns the exit code."""
        if self._runtime is None:
            return 0
        code = self._runtime.stop(timeout=timeout)
        self._runtime.close()
        self.container.shutdown_resources()
        return code

    def run(self) -> int:
        """Start, then block until SIGTERM/SIGINT has been handled; returns the exit code.

        A second signal during the drain exits the process at once (128 + signal number).
        """
        hard_exit = exit_now(self.container.logging().flush)
        return run_until_stopped(self.runtime, self._boot.snapshot, hard_exit=hard_exit)

    def add_shutdown_hook(
        self, name: str, fn: Callable[[], Any], order: int = 100, timeout: float | None = None
    ) -> None:
        """Run `fn` after the drain, in `order` (lower first; Mira's own hooks use 10-50)."""
        self.container.shutdown_hooks().add(name, fn, order=order, timeout=timeout)

    def flush_logs(self) -> None:
        """Write every queued log line now (lines are queued for up to 50 ms)."""
        self.container.logging().flush()

    @property
    def address(self) -> tuple[str, int] | None:
        return self.runtime.address


def main(argv: list[str] | None = None, relay: StopSignals | None = None) -> int:
    """`python -m mira.app config.json`: the same as `python -m mira.entrypoints.web`."""
    from mira.entrypoints.web import main as web_main

    return web_main(argv, relay=relay)


if __name__ == "__main__":
    sys.exit(main(relay=_EARLY))

__all__ = ["BootstrapError", "MiraApplication"]
