"""Graceful shutdown: the drain sequence and ordered cleanup hooks, each bounded in time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from mira.domain import commands as cmd
from mira.domain.events import DrainStarted
from mira.domain.ports import Clock, IdGenerator

log = structlog.get_logger("mira.shutdown")
EXIT_OK = 0
EXIT_DEADLINE = 1
EXIT_CONFIG = 2


def forced_exit_code(signal_name: str) -> int:
    """A second signal during the drain exits at once with 128 + the signal number."""
    import signal as _signal

    try:
        return 128 + int(_signal.Signals[signal_name])
    except KeyError:
        return 130


class DrainableServer(Protocol):
    def start_draining(self) -> None: ...
    def close_listener(self) -> None: ...
    def wait_drained(self, timeout: float) -> int: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    @property
    def in_flight(self) -> int: ...


@dataclass(order=True)
class Hook:
    order: int
    name: str = field(compare=False)
    fn: Callable[[], Any] = field(compare=False)
    timeout: float | None = field(default=None, compare=False)


class ShutdownHooks:
    """Cleanup hooks run in `order` (lower first) after the drain; embedding apps add theirs."""

    def __init__(self) -> None:
        self._hooks: list[Hook] = []

    def add(
        self, name: str, fn: Callable[[], Any], order: int = 100, timeout: float | None = None
    ) -> None:
        self._hooks.append(Hook(order, name, fn, timeout))

    def ordered(self) -> list[Hook]:
        return sorted(self._hooks)


def run_bounded(fn: Callable[[], Any], timeout: float, name: str) -> str | None:
    """Run fn in a daemon thread; None on success, else the reason it failed or hung."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, name=f"mira-hook-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"did not finish within {timeout:g}s; skipped"
    error = outcome[0] if outcome else None
    return None if error is None else f"{type(error).__name__}: {error}"


class ShutdownCoordinator:
    """Carries out the phases the domain decided; reports each fact back as a command."""

    def __init__(
        self,
        submit: Callable[[cmd.Command], Any],
        clock: Clock,
        ids: IdGenerator,
        hooks: ShutdownHooks,
        hook_timeout: Callable[[], float],
        on_done: Callable[[int], None],
    ) -> None:
        self._submit = submit
        self._clock = clock
        self._ids = ids
        self._hooks = hooks
        self._hook_timeout = hook_timeout
        self._on_done = on_done
        self.server: DrainableServer | None = None
        self._thread: threading.Thread | None = None

    def on_drain_started(self, event: DrainStarted) -> None:
        """Bus handler: drive the drain on a thread of its own so the bus stays free."""
        if self._thread is not None:
            return
        server = self.server
        if server is not None:
            server.start_draining()
        self._thread = threading.Thread(
            target=self._run, args=(event,), name="mira-shutdown", daemon=True
        )
        self._thread.start()

    def _command(self, factory: Callable[..., cmd.Command], cid: str, **fields: Any) -> None:
        self._submit(factory(correlation_id=cid, at=self._clock.now(), **fields))

    def _run(self, event: DrainStarted) -> None:
        cid = event.correlation_id
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        durations: dict[str, float] = {}
        started = time.monotonic()
        exit_code = EXIT_OK
        try:
            server = self.server
            mark = time.monotonic()
            if server is not None and event.drain_delay > 0:
                log.info(
                    "Draining: still serving during drain_delay",
                    seconds=event.drain_delay,
                    in_flight=server.in_flight,
                )
                threading.Event().wait(event.drain_delay)
            durations["drain_delay"] = time.monotonic() - mark
            server = self.server  # start-up may have bound it meanwhile
            if server is not None:
                mark = time.monotonic()
                server.close_listener()
                durations["close_listener"] = time.monotonic() - mark
                self._command(cmd.RecordListenerClosed, cid)
                mark = time.monotonic()
                abandoned = server.wait_drained(event.timeout)
                durations["drain"] = time.monotonic() - mark
                self._command(
                    cmd.RecordDrainResult, cid, abandoned=abandoned, duration=durations["drain"]
                )
                if abandoned:
                    exit_code = EXIT_DEADLINE
                    log.error(
                        "Shutdown deadline reached with requests still running",
                        abandoned=abandoned,
                        timeout=event.timeout,
                    )
                server.stop(timeout=1.0)
            mark = time.monotonic()
            self._run_hooks(cid)
            durations["hooks"] = time.monotonic() - mark
        except Exception:
            log.exception("Shutdown sequence failed")
            exit_code = EXIT_DEADLINE
        durations["total"] = time.monotonic() - started
        rounded = tuple((k, round(v, 4)) for k, v in durations.items())
        self._command(cmd.RecordStopped, cid, exit_code=exit_code, phase_durations=rounded)
        log.info(
            "Shutdown complete", exit_code=exit_code, **{f"{k}_seconds": v for k, v in rounded}
        )
        self._on_done(exit_code)

    def _run_hooks(self, cid: str) -> None:
        for hook in self._hooks.ordered():
            timeout = hook.timeout or self._hook_timeout()
            failure = run_bounded(hook.fn, timeout, hook.name)
            if failure is not None:
                log.error("Shutdown hook failed", hook=hook.name, reason=failure)
                self._command(cmd.RecordHookFailure, cid, hook=hook.name, reason=failure)
