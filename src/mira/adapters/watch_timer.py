"""When the config watcher checks the file: debounce, hot window, polls, settling. No I/O.

Every method takes `now` (monotonic seconds), so the timing is tested with plain numbers
(tests/unit/test_watch_timer.py) and the watcher only supplies a clock and does the checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# watchdog holds an unpaired IN_MOVED_FROM for up to 0.5 s; cheap stat checks cover that window.
HOT_WINDOW = 0.6
FAST_CHECK_INTERVAL = 0.001
FULL_CHECK_EVERY_N_POLLS = 10
# An unreadable or empty file is reported only if it stays so this long: editors and in-place
# writers pass through those states on every save.
SETTLE_GRACE = 0.25
MAX_DEBOUNCE_FACTOR = 10

Check = Literal["fast", "full"] | None  # fast: compare stat signatures; full: read the file


@dataclass(frozen=True)
class Plan:
    """What one wake-up of the watcher does."""

    check: Check = None
    poll: bool = False  # the poll interval elapsed: re-attach a dead observer
    poll_check: Check = None  # the poll's own check (none while a write is being debounced)


class WatchTimer:
    """The watcher's schedule. Not thread-safe: the watcher calls it under its lock."""

    def __init__(self, poll_interval: float, debounce: float, now: float) -> None:
        self.poll_interval = poll_interval
        self.debounce = debounce
        self.full_pending = False
        self._debounce_first = 0.0
        self._debounce_due: float | None = None
        self._hot_until = 0.0
        self._last_poll = now
        self._polls = 0
        self._settle_due: float | None = None

    def own_write(self, now: float) -> None:
        """The config file itself was created or modified: wait for the writer to finish."""
        self._hot_until = now + HOT_WINDOW
        if self._debounce_due is None:
            self._debounce_first = now
        cap = self._debounce_first + MAX_DEBOUNCE_FACTOR * self.debounce
        self._debounce_due = min(now + self.debounce, cap)

    def other_event(self, now: float, structural: bool) -> None:
        """Any other event in the directory; a structural one (create, move, delete, ...) may
        be a `..data` swap and is read at once, another file's write only gets stat checks."""
        self._hot_until = now + HOT_WINDOW
        if structural:
            self.full_pending = True
            self._debounce_due = None

    def wait_time(self, now: float) -> float:
        """Seconds until the next wake-up is due."""
        if self.full_pending:
            return 0.0
        due = [self._last_poll + self.poll_interval]
        if self._debounce_due is not None:
            due.append(self._debounce_due)
        elif now < self._hot_until:
            due.append(now + FAST_CHECK_INTERVAL)
        if self._hot_until:
            due.append(self._hot_until)
        if self._settle_due is not None:
            due.append(self._settle_due)
        return max(0.0, min(due) - now)

    def step(self, now: float) -> Plan:
        """What is due at `now`; consumes it."""
        debounced = self._debounce_due is not None and now >= self._debounce_due
        full = self.full_pending or debounced
        if full:
            self.full_pending = False
            self._debounce_due = None
        debouncing = self._debounce_due is not None
        hot = now < self._hot_until
        trailing = not hot and self._hot_until > 0  # a burst just ended: read once more
        if trailing:
            self._hot_until = 0.0
        settling = self._settle_due is not None and now >= self._settle_due
        check: Check = None
        if full or trailing or settling:
            check = "full"
        elif hot and not debouncing:
            check = "fast"
        if now < self._last_poll + self.poll_interval:
            return Plan(check)
        self._last_poll = now
        self._polls += 1
        if debouncing:
            return Plan(check, poll=True)
        every_n = self._polls % FULL_CHECK_EVERY_N_POLLS == 0
        return Plan(check, poll=True, poll_check="full" if every_n else "fast")

    def hold_unsettled(self, now: float) -> bool:
        """The file reads empty or unreadable: True while that is still within the grace."""
        if self._settle_due is None:
            self._settle_due = now + SETTLE_GRACE
        return now < self._settle_due

    def settled(self) -> None:
        self._settle_due = None
