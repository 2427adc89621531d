"""The config watcher's timing (WatchTimer) on a fake clock: no threads, no sleeps, no files."""

from __future__ import annotations

from pytest import approx

from mira.adapters.watch_timer import (
    FULL_CHECK_EVERY_N_POLLS,
    HOT_WINDOW,
    MAX_DEBOUNCE_FACTOR,
    SETTLE_GRACE,
    Plan,
    WatchTimer,
)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def timer(clock: FakeClock, poll: float = 5.0, debounce: float = 0.05) -> WatchTimer:
    return WatchTimer(poll, debounce, clock.now)


def test_with_nothing_happening_it_sleeps_until_the_next_poll() -> None:
    clock = FakeClock()
    t = timer(clock, poll=5.0)
    assert t.wait_time(clock.now) == approx(5.0)
    assert t.step(clock.advance(1.0)) == Plan()
    assert t.wait_time(clock.now) == approx(4.0)


def test_polls_compare_signatures_and_every_tenth_poll_reads_the_file() -> None:
    clock = FakeClock()
    t = timer(clock, poll=5.0)
    plans = [t.step(clock.advance(5.0)) for _ in range(2 * FULL_CHECK_EVERY_N_POLLS)]
    assert all(p.poll for p in plans)
    full = [i + 1 for i, p in enumerate(plans) if p.poll_check == "full"]
    assert full == [FULL_CHECK_EVERY_N_POLLS, 2 * FULL_CHECK_EVERY_N_POLLS]
    assert {p.poll_check for p in plans} == {"fast", "full"}


def test_a_burst_of_writes_to_the_file_is_read_once_after_it_goes_quiet() -> None:
    clock = FakeClock()
    t = timer(clock, debounce=0.05)
    for _ in range(3):
        t.own_write(clock.advance(0.01))
        assert t.wait_time(clock.now) == approx(0.05)  # each write pushes the read back
        assert t.step(clock.advance(0.001)).check is None  # debouncing: not even stat checks
    assert t.step(clock.advance(0.05)).check == "full"
    assert t.step(clock.advance(0.001)).check == "fast"  # still within the hot window


def test_an_endless_burst_is_read_at_ten_debounces_at_the_latest() -> None:
    clock = FakeClock()
    t = timer(clock, debounce=0.05)
    first = clock.now
    t.own_write(first)
    reads = []
    for _ in range(100):
        clock.advance(0.01)
        t.own_write(clock.now)
        if t.step(clock.now).check == "full":
            reads.append(clock.now)
            break
    assert reads and abs(reads[0] - (first + MAX_DEBOUNCE_FACTOR * 0.05)) < 0.011


def test_a_directory_event_is_read_at_once_then_checked_fast_then_read_once_more() -> None:
    clock = FakeClock()
    t = timer(clock)
    t.other_event(clock.now, structural=True)  # e.g. the kubelet's `..data` rename
    assert t.wait_time(clock.now) == approx(0.0)
    assert t.step(clock.now).check == "full"
    # watchdog may hold half of a rename for 0.5 s: stat checks cover that window...
    assert t.wait_time(clock.now) == approx(0.001)
    assert t.step(clock.advance(0.1)).check == "fast"
    # ...and when it ends, one trailing read catches anything the stat checks could not see.
    assert t.step(clock.advance(HOT_WINDOW)).check == "full"
    assert t.step(clock.advance(0.1)).check is None
    assert t.wait_time(clock.now) > 4.0  # quiet again: only the poll is due


def test_another_file_written_in_the_directory_only_gets_stat_checks() -> None:
    clock = FakeClock()
    t = timer(clock)
    t.other_event(clock.now, structural=False)  # a log file beside the config
    assert t.step(clock.advance(0.01)).check == "fast"
    assert not t.full_pending


def test_a_structural_event_cancels_a_debounce_and_reads_at_once() -> None:
    clock = FakeClock()
    t = timer(clock, debounce=1.0)
    t.own_write(clock.now)
    t.other_event(clock.advance(0.01), structural=True)
    assert t.step(clock.now).check == "full"


def test_an_empty_or_unreadable_file_is_held_for_the_grace_then_reported() -> None:
    clock = FakeClock()
    t = timer(clock)
    assert t.hold_unsettled(clock.now)  # the first sight starts the grace
    assert t.wait_time(clock.now) == approx(SETTLE_GRACE)
    assert t.hold_unsettled(clock.advance(SETTLE_GRACE / 2))
    assert t.step(clock.advance(SETTLE_GRACE / 2)).check == "full"  # the grace ran out: read
    assert not t.hold_unsettled(clock.now)  # still empty: now it is reported
    t.settled()
    assert t.wait_time(clock.now) > 4.0


def test_a_transient_gap_that_heals_within_the_grace_is_never_reported() -> None:
    clock = FakeClock()
    t = timer(clock)
    assert t.hold_unsettled(clock.now)  # vim renamed the file away
    t.settled()  # the next read found the new content
    assert t.step(clock.advance(SETTLE_GRACE)).check is None
    assert t.hold_unsettled(clock.now)  # a later gap gets a grace of its own


def test_a_shorter_poll_interval_applies_to_the_running_schedule() -> None:
    clock = FakeClock()
    t = timer(clock, poll=3600.0)
    assert t.step(clock.advance(1.0)) == Plan()
    t.poll_interval = 0.5
    assert t.wait_time(clock.now) == approx(0.0)  # overdue under the new interval
    assert t.step(clock.now).poll
    assert t.wait_time(clock.now) == approx(0.5)


def test_a_poll_during_a_debounce_reattaches_but_does_not_check() -> None:
    clock = FakeClock()
    t = timer(clock, poll=1.0, debounce=0.5)
    clock.advance(0.9)
    t.own_write(clock.now)
    plan = t.step(clock.advance(0.1))
    assert plan == Plan(check=None, poll=True, poll_check=None)
