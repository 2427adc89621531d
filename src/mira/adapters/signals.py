"""SIGTERM / SIGINT -> a shutdown request on the bus; nothing else happens in the handler."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_signals(request_shutdown: Callable[[str], None]) -> Callable[[], None]:
    """Route stop signals to `request_shutdown(signal_name)`; return a function restoring the old
    handlers. Only the main thread may install handlers; elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        request_shutdown(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
