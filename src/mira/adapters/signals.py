"""SIGTERM / SIGINT -> a shutdown request on the bus; nothing else happens in the handler.

The first signal starts the graceful drain; a second one during the drain makes the runtime
exit at once with 128 + the signal number (143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Routes stop signals to a target set later; signals that arrive before are replayed."""

    def __init__(self) -> None:
        self._target: Callable[[str], None] | None = None
        self._pending: list[str] = []
        #: restores the handlers that were installed before (set by install's callers)
        self.restore: Callable[[], None] = lambda: None

    def handle(self, signal_name: str) -> None:
        target = self._target
        if target is None:
            self._pending.append(signal_name)
        else:
            target(signal_name)

    def attach(self, request_shutdown: Callable[[str], None]) -> None:
        """From now on call `request_shutdown(signal_name)`; replay any signal already seen."""
        self._target = request_shutdown
        pending, self._pending = self._pending, []
        for name in pending:
            request_shutdown(name)

    def install(self) -> Callable[[], None]:
        """Install the handlers; return a function restoring the old ones. Only the main
        thread may install handlers; elsewhere this is a no-op."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            self.handle(signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


def catch_early_signals() -> StopSignals:
    """Program entry points call this before their heavy imports, so a stop signal that arrives
    during the ~0.4 s of imports is kept (and replayed once attached) instead of killing the
    process. The relay is the one place a stop signal waits until the runtime can take it."""
    relay = StopSignals()
    relay.restore = relay.install()
    return relay
