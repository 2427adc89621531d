"""An embedding app for the shutdown tests: a slow message type, extra hooks, a slow start-up.

Run: `python -m tests.integration.slow_app config.json` (repo root on PYTHONPATH). Options by
environment: SLOW_APP_HANG_HOOK=1 adds a hook that never returns (order 15) and a hook that
logs "slow_app late hook ran" (order 60); SLOW_APP_BIND_DELAY / SLOW_APP_AFTER_BIND_DELAY
(seconds) hold start-up while the server binds / after it is bound but before ready, logging
"slow_app binding" / "slow_app bound" first so a test can signal at that moment.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from dependency_injector import providers

from mira.app import MiraApplication
from mira.container import Container

log = structlog.get_logger("slow_app")


def sleep_handler(data: Mapping[str, Any]) -> dict[str, Any]:
    """Message type "sleep": hold the request for data.ms milliseconds."""
    ms = data.get("ms")
    if not isinstance(ms, int) or not 0 <= ms <= 60_000:
        raise ValueError(f"data.ms must be an integer 0-60000, got {ms!r}")
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


class SlowStartServer:
    """Wraps the real server; bind() pauses before and after, so signals can land there."""

    def __init__(self, inner: Any, before: float, after: float) -> None:
        self._inner = inner
        self._before = before
        self._after = after

    def bind(self) -> tuple[str, int]:
        log.info("slow_app binding", seconds=self._before)
        time.sleep(self._before)
        address: tuple[str, int] = self._inner.bind()
        log.info("slow_app bound", seconds=self._after)
        time.sleep(self._after)
        return address

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _slow_start(real: Callable[..., Any], *args: Any) -> Iterator[Any]:
    """The container's own server resource (a context manager factory), wrapped."""
    *server_args, before, after = args
    with real(*server_args) as inner:
        yield SlowStartServer(inner, before, after)


def build(config_path: str, environ: Mapping[str, str]) -> MiraApplication:
    container = Container()
    container.message_handlers().register("sleep", sleep_handler)
    before = float(environ.get("SLOW_APP_BIND_DELAY", "0"))
    after = float(environ.get("SLOW_APP_AFTER_BIND_DELAY", "0"))
    if before or after:
        server = container.server.providers["single"]  # the one-process engine
        container.server.override(
            providers.Resource(_slow_start, server.provides, *server.args, before, after)
        )
    app = MiraApplication(config_path, container=container)
    if environ.get("SLOW_APP_HANG_HOOK") == "1":
        app.add_shutdown_hook("hangs-forever", threading.Event().wait, order=15)
        app.add_shutdown_hook("late", lambda: log.info("slow_app late hook ran"), order=60)
    return app


def main() -> int:
    return build(sys.argv[1], os.environ).run()


if __name__ == "__main__":
    sys.exit(main())
