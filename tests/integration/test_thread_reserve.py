"""ThreadReserve: which engine threads wait aside after a request, and when they come back.

A small stand-in for granian's pool (a fixed set of threads taking requests from one queue)
runs real threads: each calls enter() when a request starts on it and leave() when its
answer is out, as GranianServer._call does. A parked thread takes no request from the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from mira.adapters.thread_reserve import ThreadReserve, wait_out_of_python
from tests.support import wait_until


@dataclass
class Request:
    parkable: bool = True
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Pool:
    """`size` threads serving requests from one queue, each held until its `done` is set."""

    def __init__(self, reserve: ThreadReserve, size: int) -> None:
        self.reserve = reserve
        self.queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(size)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        while (request := self.queue.get()) is not None:
            self.reserve.enter()
            request.started.set()
            request.done.wait(10)
            self.reserve.leave(request.parkable)

    def hold(self, n: int, parkable: bool = True) -> list[Request]:
        """n requests, each on a thread of its own until released."""
        requests = [Request(parkable) for _ in range(n)]
        for r in requests:
            self.queue.put(r)
        for r in requests:
            assert r.started.wait(5), "a request found no thread to serve it"
        return requests

    def burst(self, n: int, parkable: bool = True) -> None:
        """n requests at once, all answered together."""
        for r in self.hold(n, parkable):
            r.done.set()

    def close(self) -> None:
        self.reserve.release_all()
        for _ in self.threads:
            self.queue.put(None)


@contextmanager
def pool(spare: int, size: int) -> Iterator[Pool]:
    p = Pool(ThreadReserve(spare), size)
    try:
        yield p
    finally:
        p.close()


def test_after_a_burst_all_but_spare_threads_wait_aside() -> None:
    with pool(spare=3, size=12) as p:
        p.burst(12)
        wait_until(lambda: p.reserve.parked == 9, 5, message="9 threads parked")
        assert (p.reserve.seen, p.reserve.busy) == (12, 0)
        p.burst(2)  # two of the 3 left in rotation serve the next requests: none comes back
        assert p.reserve.parked == 9


def test_a_request_with_its_body_left_unread_never_parks_its_thread() -> None:
    with pool(spare=1, size=6) as p:
        p.burst(6, parkable=False)
        wait_until(lambda: p.reserve.busy == 0, 5, message="all 6 answered")
        assert p.reserve.parked == 0
        p.burst(6)  # all six are still in rotation


def test_parked_threads_come_back_when_held_requests_take_the_idle_ones() -> None:
    """Requests that hold their threads (a stalled body, a slow handler) take the idle ones;
    each that leaves fewer than spare/4 idle sends a parked thread back, so the whole pool
    still serves: 12 requests held at once on 12 threads, 8 of them parked before."""
    with pool(spare=4, size=12) as p:
        p.burst(12)
        wait_until(lambda: p.reserve.parked == 8, 5, message="8 threads parked")
        held = p.hold(4) + p.hold(7)  # without the reserve's release, the last 7 never start
        assert p.reserve.parked <= 1
        p.hold(1)[0].done.set()
        for r in held:
            r.done.set()


def test_release_all_sends_every_parked_thread_back_and_none_parks_afterwards() -> None:
    with pool(spare=2, size=10) as p:
        p.burst(10)
        wait_until(lambda: p.reserve.parked == 8, 5, message="8 threads parked")
        assert len(p.reserve.release_all(timeout=5)) == 8
        assert p.reserve.parked == 0
        p.burst(10)  # all ten serve again
        wait_until(lambda: p.reserve.busy == 0, 5, message="all 10 answered")
        assert p.reserve.parked == 0


def test_wait_out_of_python_counts_threads_still_running_python_code() -> None:
    """What GranianServer.stop waits for: a released engine thread back in granian's Rust
    loop has no Python frame; a thread still in Python code counts until the timeout."""
    go = threading.Event()
    t = threading.Thread(target=go.wait, args=(10,), daemon=True)
    t.start()
    assert t.ident is not None
    assert wait_out_of_python(frozenset({t.ident}), timeout=0.1) == 1
    go.set()
    t.join(5)
    assert wait_out_of_python(frozenset({t.ident}), timeout=5) == 0


def test_spare_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="spare must be at least 1, got 0"):
        ThreadReserve(spare=0)
