"""`python -m mira.entrypoints.web config.json`: run the service until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import sys

import structlog

from mira.adapters.signals import install_stop_signals
from mira.adapters.structlog_logging import flush_logs
from mira.entrypoints.bootstrap import BootstrapError, bootstrap, fail
from mira.service_layer.runtime import Runtime, StartupError

log = structlog.get_logger("mira.main")


def _hard_exit(code: int) -> None:
    flush_logs()
    os._exit(code)


def serve(path: str) -> int:
    try:
        boot = bootstrap(path)
    except BootstrapError as exc:
        fail(str(exc))
        return exc.exit_code
    runtime: Runtime = boot.container.runtime(exit_process=_hard_exit)
    restore = install_stop_signals(runtime.request_shutdown)
    try:
        runtime.start(boot.snapshot)
    except StartupError as exc:
        log.error("Start-up failed", reason=str(exc))
        fail(f"start-up failed: {exc}")
        runtime.close()
        return exc.exit_code
    except Exception as exc:
        log.exception("Start-up failed")
        fail(f"start-up failed: {type(exc).__name__}: {exc}")
        return 1
    try:
        code = runtime.wait()
    finally:
        restore()
        runtime.close()
        flush_logs()
    return code if code is not None else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m mira.entrypoints.web [config.json]", file=sys.stderr)
        return 2
    return serve(args[0] if args else "config.json")


if __name__ == "__main__":
    sys.exit(main())
