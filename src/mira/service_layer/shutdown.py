"""Graceful shutdown: the drain sequence and ordered cleanup hooks, bounded in time.

Exit codes: 0 clean; 1 when the drain deadline passed with requests still running (their
number is logged as `abandoned`) or the sequence failed; 2 for a configuration error at
start-up; 128 + the signal number (143 SIGTERM, 130 SIGINT) when a second stop signal arrives
during the drain, which exits at once without waiting for anything.
"""

from __future__ import annotations

import contextlib
import contextvars
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from mira.domain import commands as cmd
from mira.domain.config.model import ShutdownSettings
from mira.domain.events import DrainStarted
from mira.domain.ports import Clock

log = structlog.get_logger("mira.shutdown")
EXIT_OK = 0
EXIT_DEADLINE = 1
EXIT_CONFIG = 2
# Default hook orders, lower first: the sequence; embedding apps default to 100.
ORDER_INTEGRATIONS = 10
ORDER_SECRETS = 20
ORDER_CONFIG_WATCHER = 30
ORDER_JOURNAL = 40
ORDER_LOGS = 50
_STOP_GRACE = 1.0  # seconds server.stop() may take once every request has finished


def forced_exit_code(signal_name: str) -> int:
    """A second signal during the drain exits at once with 128 + the signal number."""
    try:
        return 128 + int(signal.Signals[signal_name])
    except KeyError:
        return 128 + int(signal.SIGINT)


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
    """Cleanup hooks run in `order` (lower first, ties in the order added) after the drain."""

    def __init__(self) -> None:
        self._hooks: list[Hook] = []
        self._lock = threading.Lock()

    def add(
        self, name: str, fn: Callable[[], Any], order: int = 100, timeout: float | None = None
    ) -> None:
        """Register `fn`; it gets min(timeout or shutdown.hook_timeout, what remains)."""
        if not name:
            raise ValueError("shutdown hook name must not be empty")
        if not callable(fn):
            raise TypeError(f"shutdown hook {name!r}: {fn!r} is not callable")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"shutdown hook {name!r}: timeout must be > 0, got {timeout!r}")
        with self._lock:
            self._hooks.append(Hook(order, name, fn, timeout))

    def ordered(self) -> list[Hook]:
        with self._lock:
            return sorted(self._hooks)  # sorted() is stable: ties keep the order added


def run_bounded(fn: Callable[[], Any], timeout: float, name: str) -> str | None:
    """Run fn in a daemon thread (with the caller's log context); None on success, else the
    reason it failed or hung."""
    outcome: list[BaseException | None] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            context.run(fn)
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
        hooks: ShutdownHooks,
        settings: Callable[[], ShutdownSettings],
        on_done: Callable[[int], None],
        *,
        run_hook: Callable[[Callable[[], Any], float, str], str | None] = run_bounded,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._submit = submit
        self._clock = clock
        self._hooks = hooks
        self._settings = settings
        self._on_done = on_done
        self._run_hook = run_hook
        self._sleep = sleep
        self.server: DrainableServer | None = None
        # Set by the runtime when start() returns: the drain waits for it, so a signal during
        # start-up never races the bind or the start of the refreshers.
        self.startup_finished = threading.Event()
        self._thread: threading.Thread | None = None

    def on_drain_started(self, event: DrainStarted) -> None:
        """Bus handler: drive the drain on a thread of its own so the bus stays free."""
        if self._thread is not None:
            return
        if self.server is not None:
            self.server.start_draining()
        self._thread = threading.Thread(
            target=self.run, args=(event,), name="mira-shutdown", daemon=True
        )
        self._thread.start()

    def _command(self, factory: Callable[..., cmd.Command], cid: str, **fields: Any) -> Any:
        return self._submit(factory(correlation_id=cid, at=self._clock.now(), **fields))

    def run(self, event: DrainStarted) -> None:
        """The whole sequence, in the calling thread: delay, drain, hooks, report, on_done."""
        cid = event.correlation_id
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        durations: dict[str, float] = {}
        started = self._clock.monotonic()
        exit_code = EXIT_OK
        try:
            self._delay(event, durations)
            exit_code = self._drain(event, cid, durations)
            mark = self._clock.monotonic()
            self._run_hooks(cid, self._settings())
            durations["hooks"] = self._clock.monotonic() - mark
        except Exception:
            log.exception("Shutdown sequence failed")
            exit_code = EXIT_DEADLINE
        durations["total"] = self._clock.monotonic() - started
        rounded = tuple((k, round(v, 4)) for k, v in durations.items())
        stopped = self._command(
            cmd.RecordStopped, cid, exit_code=exit_code, phase_durations=rounded
        )
        with contextlib.suppress(Exception):  # journaled before the last line, when it can be
            stopped.result(timeout=1.0)
        log.info(
            "Shutdown complete", exit_code=exit_code, **{f"{k}_seconds": v for k, v in rounded}
        )
        self._on_done(exit_code)

    def _delay(self, event: DrainStarted, durations: dict[str, float]) -> None:
        """Keep serving for drain_delay (only once ready: before, no traffic was routed here)."""
        mark = self._clock.monotonic()
        if self.startup_finished.is_set() and self.server is not None and event.drain_delay > 0:
            log.info(
                "Draining: still serving during drain_delay",
                seconds=event.drain_delay,
                in_flight=self.server.in_flight,
            )
            self._sleep(event.drain_delay)
        if not self.startup_finished.wait(event.timeout):
            log.warning("Start-up still running; shutting down anyway", waited=event.timeout)
        durations["drain_delay"] = self._clock.monotonic() - mark

    def _drain(self, event: DrainStarted, cid: str, durations: dict[str, float]) -> int:
        server = self.server
        if server is None:
            return EXIT_OK
        server.start_draining()
        mark = self._clock.monotonic()
        server.close_listener()
        durations["close_listener"] = self._clock.monotonic() - mark
        self._command(cmd.RecordListenerClosed, cid)
        mark = self._clock.monotonic()
        abandoned = server.wait_drained(event.timeout)
        durations["drain"] = self._clock.monotonic() - mark
        self._command(cmd.RecordDrainResult, cid, abandoned=abandoned, duration=durations["drain"])
        if abandoned:
            log.error(
                "Shutdown deadline reached with requests still running",
                abandoned=abandoned,
                timeout=event.timeout,
            )
        # Stuck workers would not stop anyway: do not spend the hooks' budget waiting for them.
        server.stop(timeout=0.1 if abandoned else _STOP_GRACE)
        return EXIT_DEADLINE if abandoned else EXIT_OK

    def _run_hooks(self, cid: str, budget: ShutdownSettings) -> None:
        deadline = self._clock.monotonic() + budget.hooks_timeout
        hooks = self._hooks.ordered()
        for index, hook in enumerate(hooks):
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                self._skip(cid, [h.name for h in hooks[index:]], budget.hooks_timeout)
                return
            timeout = min(hook.timeout or budget.hook_timeout, remaining)
            mark = self._clock.monotonic()
            failure = self._run_hook(hook.fn, timeout, hook.name)
            took = round(self._clock.monotonic() - mark, 4)
            if failure is None:
                log.debug("Shutdown hook done", hook=hook.name, seconds=took)
                continue
            log.error("Shutdown hook failed", hook=hook.name, reason=failure, seconds=took)
            self._command(cmd.RecordHookFailure, cid, hook=hook.name, reason=failure)

    def _skip(self, cid: str, names: list[str], total: float) -> None:
        reason = f"not run: shutdown.hooks_timeout ({total:g}s) used up"
        log.error("Shutdown hooks skipped", hooks=names, reason=reason)
        for name in names:
            self._command(cmd.RecordHookFailure, cid, hook=name, reason=reason)
