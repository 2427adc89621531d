"""The message bus: one queue, one thread; decide, journal, then run effect handlers."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import structlog

from mira.domain.commands import Command
from mira.domain.decider import decide
from mira.domain.events import Event
from mira.domain.ports import EventJournal
from mira.domain.state import RuntimeState, evolve

E = TypeVar("E", bound=Event)
Handler = Callable[[Any], None]
_STOP = object()

log = structlog.get_logger("mira.bus")
event_log = structlog.get_logger("mira.events")


class MessageBus:
    """Single writer of the runtime state; readers use `state` (an immutable snapshot)."""

    def __init__(self, journal: EventJournal, state: RuntimeState | None = None) -> None:
        self._journal = journal
        self._state = state or RuntimeState()
        # What other threads see: published once a command's handlers (its effects) have run,
        # so "generation N on /ready" means generation N is applied, not only decided.
        self._published = self._state
        self._processing: int | None = None
        self._handlers: dict[type[Event], list[Handler]] = defaultdict(list)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[RuntimeState], None]] = []

    @property
    def state(self) -> RuntimeState:
        """The latest state on the thread processing a command; elsewhere the last published."""
        if threading.get_ident() == self._processing:
            return self._state
        return self._published

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        """Run `handler(event)` on the bus thread after each `event_type` is journaled."""
        self._handlers[event_type].append(handler)

    def on_state(self, listener: Callable[[RuntimeState], None]) -> None:
        """Call `listener(state)` after every state change (e.g. to update a gauge)."""
        self._listeners.append(listener)

    def submit(self, command: Command) -> Future[list[Event]]:
        """Queue a command from any thread; the future resolves to the events it caused."""
        future: Future[list[Event]] = Future()
        if self._thread is None or not self._thread.is_alive():
            future.set_exception(RuntimeError("the message bus is not running"))
            return future
        self._queue.put((command, future))
        return future

    def handle(self, command: Command, timeout: float | None = 10.0) -> list[Event]:
        """Submit and wait for the events (from the bus thread itself: process inline)."""
        if threading.get_ident() == self._processing:  # from a handler: process inline
            return self._process(command)
        return self.submit(command).result(timeout)

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
            try:
                future.set_result(self._process(command))
            except BaseException as exc:  # the bus thread must never die
                log.exception("command failed", command=type(command).__name__)
                future.set_exception(exc)

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
                event_log.info(event.name, event_type=event.name, **event.log_fields())
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

    def _handlers_for(self, event: Event) -> list[Handler]:
        return [h for cls in type(event).__mro__ for h in self._handlers.get(cls, ())]

    @staticmethod
    def _safely(fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:
            log.exception("event handler failed", handler=getattr(fn, "__qualname__", repr(fn)))

    def process_inline(self, command: Command) -> list[Event]:
        """Process without the thread (tests and single-threaded tools only)."""
        return self._process(command)
