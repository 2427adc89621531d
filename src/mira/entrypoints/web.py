"""`python -m mira.entrypoints.web config.json`: run the service until SIGTERM/SIGINT.

Exit codes (decided in `mira.domain.lifecycle`): 0 after a clean graceful shutdown (also when
the signal came during start-up); 1 when the drain deadline passed with requests still
running, or start-up failed at run time (port in use); 2 for a configuration error; 128 +
signal number (143 SIGTERM, 130 SIGINT) when a second stop signal arrived during the drain and
the process exited at once.
"""

from __future__ import annotations

import contextlib
import os
import sys

from mira.adapters.signals import StopSignals, catch_early_signals

if __name__ == "__main__":
    _EARLY = catch_early_signals()  # before the imports below: a SIGTERM then still ends cleanly

from collections.abc import Callable

import structlog

from mira.container import Container
from mira.domain.ports import Snapshot
from mira.entrypoints.bootstrap import BootstrapError, bootstrap, fail
from mira.service_layer.runtime import Runtime, StartupError

log = structlog.get_logger("mira.main")


def exit_now(flush: Callable[[], None]) -> Callable[[int], None]:
    """End the process now: flush the logs, skip interpreter shutdown (it would join threads)."""

    def hard_exit(code: int) -> None:
        with contextlib.suppress(Exception):
            flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)

    return hard_exit


def serve(path: str, container: Container | None = None, relay: StopSignals | None = None) -> int:
    """Bootstrap from `path` and run until stopped; returns the exit code."""
    if relay is None:
        relay = StopSignals()
        relay.restore = relay.install()  # first, so a signal during bootstrap is not lost
    try:
        try:
            boot = bootstrap(path, container=container)
        except BootstrapError as exc:
            fail(str(exc))
            return exc.exit_code
        container = boot.container
        hard_exit = exit_now(container.logging().flush)
        try:
            return run(container.runtime(), boot.snapshot, relay, hard_exit)
        finally:
            container.shutdown_resources()
    finally:
        relay.restore()


def run(
    runtime: Runtime,
    snapshot: Snapshot,
    relay: StopSignals | None = None,
    hard_exit: Callable[[int], None] | None = None,
) -> int:
    """Start, serve until a stop signal has been handled, return the exit code.

    If the process could not end normally (a second signal, or a request still stuck in a
    worker thread after the deadline), flush the logs and exit here with the code.
    """
    if hard_exit is not None:
        runtime.exit_process = hard_exit
    own = relay is None
    relay = relay or StopSignals()
    if own:
        relay.restore = relay.install()
    runtime.bus.start()
    relay.attach(runtime.request_shutdown)
    try:
        code = _start_and_wait(runtime, snapshot)
    finally:
        if own:
            relay.restore()
        runtime.close()
    server = runtime.server
    stuck = server.in_flight if server is not None else 0
    if hard_exit is not None and (code >= 128 or stuck):
        log.warning("Exiting without waiting for worker threads", exit_code=code, stuck=stuck)
        hard_exit(code)
    return code


def _start_and_wait(runtime: Runtime, snapshot: Snapshot) -> int:
    try:
        runtime.start(snapshot)
    except StartupError as exc:
        log.error("Start-up failed", reason=str(exc))
        fail(f"start-up failed: {exc}")
        return exc.exit_code
    except Exception as exc:
        log.exception("Start-up failed")
        fail(f"start-up failed: {type(exc).__name__}: {exc}")
        return 1
    code = runtime.wait()
    return code if code is not None else 1


def main(argv: list[str] | None = None, relay: StopSignals | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m mira.entrypoints.web [config.json]", file=sys.stderr)
        return 2
    return serve(args[0] if args else "config.json", relay=relay)


if __name__ == "__main__":
    sys.exit(main(relay=_EARLY))
