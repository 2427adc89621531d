"""The main server and the management listener as one `Server` with one lifecycle.

The management listener (probes, metrics, /admin) binds first and closes last: through the
drain it keeps answering, so /ready says "draining" instead of refusing the connection and the
last scrape still sees the shutdown's metrics. It is stopped when the process is done
(`close()`, the container's finalizer), after the main listener has drained.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from mira.adapters.granian_server import GranianServer
from mira.domain.ports import Server

log = structlog.get_logger("mira.server")


class ManagedServer:
    """Delegates the lifecycle to `main`; serves `management` beside it until `close()`."""

    def __init__(self, main: Server, management: GranianServer) -> None:
        self.main, self.management = main, management
        self.management_address: tuple[str, int] | None = None

    def bind(self) -> tuple[str, int]:
        try:
            self.management_address = self.management.bind()
        except OSError as exc:
            raise OSError(f"management listener: {exc}") from exc
        host, port = self.management_address
        log.info("management_listening", host=host, port=port)
        threading.Thread(
            target=self.management.serve_forever, name="mira-management", daemon=True
        ).start()
        try:
            return self.main.bind()
        except BaseException:
            self.management.stop(timeout=1.0)
            raise

    def serve_forever(self) -> None:
        self.main.serve_forever()

    def start_draining(self) -> None:
        self.main.start_draining()

    def close_listener(self) -> None:
        self.main.close_listener()

    def wait_drained(self, timeout: float) -> int:
        return self.main.wait_drained(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """The main server only: the management listener answers until `close()`."""
        self.main.stop(timeout)

    def close(self, timeout: float = 1.0) -> None:
        self.main.stop(timeout)
        self.management.stop(timeout)

    @property
    def in_flight(self) -> int:
        return self.main.in_flight

    def __getattr__(self, name: str) -> Any:
        """Anything beyond the `Server` port (the worker pool's `rollout`) is the main one's."""
        return getattr(self.main, name)
