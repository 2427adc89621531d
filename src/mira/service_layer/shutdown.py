"""Graceful shutdown effects: each step the lifecycle decider decides, carried out and reported.

The decider (`mira.domain.lifecycle`) says what comes next and the exit code; this module only
sleeps, closes, waits and runs hooks, each step on a thread of its own so the bus stays free,
and reports each fact back as a command.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.ports import Clock, Server

log = structlog.get_logger("mira.shutdown")
# Default hook orders, lower first: the sequence; embedding apps default to 100.
ORDER_INTEGRATIONS = 10
ORDER_SECRETS = 20
ORDER_CONFIG_WATCHER = 30
ORDER_JOURNAL = 40
ORDER_LOGS = 50
_STOP_GRACE = 1.0  # seconds server.stop() may take once every request has finished


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


def in_thread(name: str, fn: Callable[[], None]) -> None:
    """Run one shutdown step off the bus thread, in the bus's log context."""
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(fn,), name=f"mira-{name}", daemon=True).start()


class ShutdownEffects:
    """Carries out the shutdown steps; `server` is set once bound (under `start_lock`)."""

    def __init__(
        self,
        submit: Callable[[cmd.Command], Any],
        clock: Clock,
        hooks: ShutdownHooks,
        *,
        run_hook: Callable[[Callable[[], Any], float, str], str | None] = run_bounded,
        sleep: Callable[[float], None] = time.sleep,
        spawn: Callable[[str, Callable[[], None]], None] = in_thread,
    ) -> None:
        self._submit = submit
        self._clock = clock
        self._hooks = hooks
        self._run_hook = run_hook
        self._sleep = sleep
        self._spawn = spawn
        self.server: Server | None = None
        #: start-up binds and installs the server under this lock; closing takes it too and
        #: sets `cancelled`, so a stop during start-up never races the bind
        self.start_lock = threading.Lock()
        self.cancelled = False

    def _report(self, factory: Callable[..., cmd.Command], cid: str, **fields: Any) -> None:
        self._submit(factory(correlation_id=cid, at=self._clock.now(), **fields))

    def on_drain_started(self, event: ev.DrainStarted) -> None:
        """Unready already (the state says so); keep serving for the delay, then report."""
        server = self.server
        if server is not None:
            server.start_draining()

        def delay() -> None:
            mark = self._clock.monotonic()
            if event.drain_delay > 0 and self.server is not None:
                log.info(
                    "Draining: still serving during drain_delay",
                    seconds=event.drain_delay,
                    in_flight=self.server.in_flight,
                )
                self._sleep(event.drain_delay)
            seconds = self._clock.monotonic() - mark
            self._report(cmd.DrainDelayElapsed, event.correlation_id, seconds=seconds)

        self._spawn("shutdown-delay", delay)

    def on_listener_closing(self, event: ev.ListenerClosing) -> None:
        self._spawn("shutdown-drain", lambda: self._close_and_drain(event))

    def _close_and_drain(self, event: ev.ListenerClosing) -> None:
        cid = event.correlation_id
        with self.start_lock:
            self.cancelled = True
            server = self.server
        mark = self._clock.monotonic()
        if server is not None:
            server.start_draining()
            server.close_listener()
        self._report(cmd.RecordListenerClosed, cid, seconds=self._clock.monotonic() - mark)
        mark = self._clock.monotonic()
        abandoned = server.wait_drained(event.timeout) if server is not None else 0
        seconds = self._clock.monotonic() - mark
        if abandoned:
            log.error(
                "Shutdown deadline reached with requests still running",
                abandoned=abandoned,
                timeout=event.timeout,
            )
        if server is not None:
            # Stuck workers would not stop anyway: do not spend the hooks' budget on them.
            server.stop(timeout=0.1 if abandoned else _STOP_GRACE)
        self._report(cmd.RequestsDrained, cid, abandoned=abandoned, seconds=seconds)

    def on_hooks_started(self, event: ev.HooksStarted) -> None:
        def run() -> None:
            mark = self._clock.monotonic()
            failures = self._run_hooks(event)
            seconds = self._clock.monotonic() - mark
            self._report(
                cmd.HooksFinished, event.correlation_id, failures=failures, seconds=seconds
            )

        self._spawn("shutdown-hooks", run)

    def _run_hooks(self, event: ev.HooksStarted) -> tuple[tuple[str, str], ...]:
        deadline = self._clock.monotonic() + event.hooks_timeout
        hooks = self._hooks.ordered()
        failures: list[tuple[str, str]] = []
        for index, hook in enumerate(hooks):
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                names = [h.name for h in hooks[index:]]
                reason = f"not run: shutdown.hooks_timeout ({event.hooks_timeout:g}s) used up"
                log.error("Shutdown hooks skipped", hooks=names, reason=reason)
                failures.extend((name, reason) for name in names)
                break
            timeout = min(hook.timeout or event.hook_timeout, remaining)
            mark = self._clock.monotonic()
            failure = self._run_hook(hook.fn, timeout, hook.name)
            took = round(self._clock.monotonic() - mark, 4)
            if failure is None:
                log.debug("Shutdown hook done", hook=hook.name, seconds=took)
                continue
            log.error("Shutdown hook failed", hook=hook.name, reason=failure, seconds=took)
            failures.append((hook.name, failure))
        return tuple(failures)
