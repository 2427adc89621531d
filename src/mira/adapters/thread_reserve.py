"""Few hot threads for the granian engine: surplus Python threads wait aside, not in rotation.

granian's WSGI pool (`src/blocking.rs`) queues each request on a crossbeam channel whose idle
threads are woken oldest first, and starts a thread whenever its queue is longer than its idle
count. Under load it grows far past the busy connections (207 threads under 32 connections,
counted), and every request then wakes the thread idle longest: a cold one. That costs about a
fifth of the CPU per GET (docs/decisions/0001, "Threads, parked (step 7)").

Mira cannot choose which thread granian wakes, but it can choose which threads are idle in
granian's eyes. When a request is done and more than `spare` threads would be idle, the thread
that served it does not return to granian: it waits here, parked, after its answer has gone
out. granian then rotates through about `spare` idle threads, kept warm. A parked thread goes
back as soon as granian's idle threads run short (stalled bodies or slow handlers hold the
others), so the pool as a whole (server.max_threads) still stands behind slow senders.

Only a request whose body was read to its end parks its thread (granian drops the body stream
once the callback returns; hyper has nothing left to read by then).
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["ThreadReserve", "wait_out_of_python"]

#: How long release_all waits for released threads to leave Python.
RELEASE_TIMEOUT = 2.0


class ThreadReserve:
    """Counts the engine's threads (seen, busy, parked) and parks the surplus.

    `enter` and `leave` frame each request on the engine thread that serves it.
    """

    def __init__(self, spare: int) -> None:
        if spare < 1:
            raise ValueError(f"spare must be at least 1, got {spare}")
        self._spare = spare
        self._low = max(1, spare // 4)  # release a parked thread below this many idle
        self._cond = threading.Condition(threading.Lock())
        self._local = threading.local()
        self._seen = 0  # threads that served a request (granian keeps its threads for good)
        self._busy = 0  # threads between enter and leave
        self._parked: set[int] = set()  # the threads waiting here
        self._released = 0  # parked threads told to go back, not yet gone
        self._closed = False

    @property
    def busy(self) -> int:
        """Requests between enter and leave: the engine's in-flight count."""
        return self._busy

    @property
    def parked(self) -> int:
        return len(self._parked)

    @property
    def seen(self) -> int:
        return self._seen

    def _idle(self) -> int:
        """Threads granian can hand a request to now (released ones count: they are going)."""
        return self._seen - self._busy - len(self._parked) + self._released

    def enter(self) -> None:
        with self._cond:
            self._busy += 1
            if not hasattr(self._local, "seen"):
                self._local.seen = True
                self._seen += 1
            if len(self._parked) > self._released and self._idle() < self._low:
                self._released += 1
                self._cond.notify()

    def leave(self, parkable: bool) -> None:
        """The request is done; park this thread if it is surplus and may park."""
        with self._cond:
            self._busy -= 1
            if not parkable or self._closed or self._idle() <= self._spare:
                return
            ident = threading.get_ident()
            self._parked.add(ident)
            while not self._released and not self._closed:
                self._cond.wait()
            if self._released:
                self._released -= 1
            self._parked.discard(ident)
            if self._closed and not self._parked:
                self._cond.notify_all()  # release_all waits for the last one

    def release_all(self, timeout: float = RELEASE_TIMEOUT) -> frozenset[int]:
        """Send every parked thread back and park no more; wait up to timeout until none is
        parked. The idents of the threads sent back."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            released = frozenset(self._parked)
            self._cond.notify_all()
            while self._parked and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
        return released


def wait_out_of_python(threads: frozenset[int], timeout: float = RELEASE_TIMEOUT) -> int:
    """Wait until none of `threads` runs Python code (an engine thread back in its Rust loop
    has no Python frame; one woken during interpreter shutdown would abort the process); how
    many still do at the timeout."""
    deadline = time.monotonic() + timeout
    running = set(threads)
    while running:
        running &= sys._current_frames().keys()
        if not running or time.monotonic() >= deadline:
            break
        time.sleep(0.005)
    return len(running)
