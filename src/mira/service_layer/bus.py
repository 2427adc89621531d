"""The message bus: one queue, one thread; decide, journal, then run effect handlers."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import structlog

from mira.domain.commands import Command
from mira.domain.decider import decide
from mira.domain.events import LIFECYCLE, Event
from mira.domain.ports import EventJournal
from mira.domain.state import RuntimeState, evolve

E = TypeVar("E", bound=Event)
Handler = Callable[[Any], None]
_STOP = object()

log = structlog.get_logger("mira.bus")
event_log = structlog.get_logger("mira.events")


class MessageBus:
    """Single writer of the runtime state; readers use `state` (an immutable snapshot)."""

    def __init__(
        self, journal: EventJournal, state: RuntimeState | None = None, inline: bool = False
    ) -> None:
        """`inline`: every command is processed at once on the thread that submits it (unit
        tests and single-threaded tools; no bus thread)."""
        self._inline = inline
        self._journal = journal
        self._state = state or RuntimeState()
        # What other threads see: published once a command's handlers (its effects) have run,
        # so "generation N on /ready" means generation N is applied, not only decided.
        self._published = self._state
        self._processing: int | None = None
        self._handlers: list[tuple[type[Event], Handler]] = []
        self._by_type: dict[type[Event], list[Handler]] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[RuntimeState], None]] = []
        self._busy_since: float | None = None  # monotonic start of the command in progress

    @property
    def state(self) -> RuntimeState:
        """The latest state on the thread processing a command; elsewhere the last published."""
        if threading.get_ident() == self._processing:
            return self._state
        return self._published

    def current_state(self) -> RuntimeState:
        """`state` as a method (for wiring)."""
        return self.state

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        """Run `handler(event)` on the bus thread after each `event_type` (or subclass) is
        journaled; handlers run in the order they subscribed."""
        self._handlers.append((event_type, handler))
        self._by_type.clear()

    def on_state(self, listener: Callable[[RuntimeState], None]) -> None:
        """Call `listener(state)` after every state change (e.g. to update a gauge)."""
        self._listeners.append(listener)

    def submit(self, command: Command) -> Future[list[Event]]:
        """Queue a command from any thread; the future resolves to the events it caused."""
        future: Future[list[Event]] = Future()
        if self._inline:
            future.set_result(self._process(command))
            return future
        if self._thread is None or not self._thread.is_alive():
            future.set_exception(RuntimeError("the message bus is not running"))
            return future
        self._queue.put((command, future))
        return future

    def handle(self, command: Command, timeout: float | None = 10.0) -> list[Event]:
        """Submit and wait for the events (from the bus thread itself: process inline)."""
        if self._inline or threading.get_ident() == self._processing:  # process inline
            return self._process(command)
        return self.submit(command).result(timeout)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stalled(self, bound: float) -> str | None:
        """Why the bus cannot answer now (dead, or one command for over `bound` seconds)."""
        if self._inline:
            return None
        if not self.running:
            return "the runtime's message bus is not running"
        since = self._busy_since
        if since is not None and (waited := time.monotonic() - since) > bound:
            return f"the runtime's message bus has not answered for {waited:.0f}s"
        return None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="mira-bus", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is None or threading.current_thread() is thread:
            return
        self._queue.put(_STOP)
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            command, future = item
            self._busy_since = time.monotonic()
            try:
                future.set_result(self._process(command))
            except BaseException as exc:  # the bus thread must never die
                future.set_exception(exc)
                name = type(command).__name__
                _report(lambda: log.exception("command failed", command=name))  # noqa: B023
            finally:
                self._busy_since = None

    def _process(self, command: Command) -> list[Event]:
        # A handler may handle() another command inline; that one must not publish the state
        # or drop the outer command's correlation id before the outer handlers are done.
        nested = self._processing == threading.get_ident()
        outer_id = structlog.contextvars.get_contextvars().get("correlation_id")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=command.correlation_id)
        self._processing = threading.get_ident()
        try:
            events = decide(command, self._state)
            for event in events:
                self._state = evolve(self._state, event)
                self._journal.append(event)
                _report(lambda: self._log_event(event))  # noqa: B023 (called at once)
            for listener in self._listeners:
                self._safely(listener, self._state)
            for event in events:
                for handler in self._handlers_for(event):
                    self._safely(handler, event)
            return events
        finally:
            structlog.contextvars.clear_contextvars()
            if nested:
                structlog.contextvars.bind_contextvars(correlation_id=outer_id)
            else:
                self._published = self._state
                self._processing = None

    @staticmethod
    def _log_event(event: Event) -> None:
        lifecycle = {"lifecycle": True} if isinstance(event, LIFECYCLE) else {}
        event_log.info(event.name, event_type=event.name, **lifecycle, **event.log_fields())

    def _handlers_for(self, event: Event) -> list[Handler]:
        kind = type(event)
        found = self._by_type.get(kind)
        if found is None:
            found = self._by_type[kind] = [h for t, h in self._handlers if issubclass(kind, t)]
        return found

    @staticmethod
    def _safely(fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            name = getattr(fn, "__qualname__", repr(fn))
            _report(lambda: log.exception("event handler failed", handler=name))

    def process_inline(self, command: Command) -> list[Event]:
        """Process without the thread (tests and single-threaded tools only)."""
        return self._process(command)


def _report(write: Callable[[], None]) -> None:
    """Log, but never let a failing log write (a full disk) take the bus thread down; the sink
    counts and reports its own failures."""
    with contextlib.suppress(Exception):
        write()
