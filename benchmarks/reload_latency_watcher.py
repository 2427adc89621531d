"""Latency from os.replace() / a ConfigMap `..data` swap to the config watcher's callback."""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from watchdog.events import FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from mira.adapters.watchdog_config import ConfigSnapshot, ConfigWatcher, read_config_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _changes import BLOCK, CHANGES, DELIVERY_TIMEOUT, GAP_RANGE, percentile


@dataclass
class Scenario:
    """One way of detecting a change, measured on its own directory."""

    name: str
    change: str
    path: Path
    delivered: threading.Event = field(default_factory=threading.Event)
    delivered_at: float = 0.0
    expected: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    missed: int = 0
    stop: Callable[[], None] = lambda: None

    def mark(self) -> None:
        self.delivered_at = time.perf_counter()
        self.delivered.set()

    def trial(self, value: int) -> None:
        self.expected = f'{{"value": {value}}}'
        self.delivered.clear()
        act, cleanup = CHANGES[self.change](self.path, self.expected)
        started = time.perf_counter()
        act()
        if self.delivered.wait(DELIVERY_TIMEOUT):
            self.latencies_ms.append((self.delivered_at - started) * 1000)
        else:
            self.missed += 1
        cleanup()


class _BareHandler(FileSystemEventHandler):
    def __init__(self, scenario: Scenario, dest: str) -> None:
        self._scenario = scenario
        self._dest = dest

    def dispatch(self, event: FileSystemEvent) -> None:
        if os.fsdecode(event.dest_path) == self._dest:
            self._scenario.mark()


def prepare(root: Path, name: str, change: str) -> Scenario:
    directory = root / name.replace(" ", "-") / change
    directory.mkdir(parents=True)
    scenario = Scenario(name=name, change=change, path=directory / "config.json")
    act, cleanup = CHANGES[change](scenario.path, '{"value": 0}')
    act()
    cleanup()
    return scenario


def start_bare(scenario: Scenario) -> None:
    dest = scenario.path if scenario.change == "replace" else scenario.path.parent / "..data"
    observer = Observer()
    handler = _BareHandler(scenario, str(dest))
    observer.schedule(handler, str(scenario.path.parent), event_filter=[FileMovedEvent])
    observer.start()

    def stop() -> None:
        observer.stop()
        observer.join()

    scenario.stop = stop


def start_watcher(scenario: Scenario, **options: float | bool) -> None:
    def on_change(snapshot: ConfigSnapshot) -> None:
        if snapshot.text == scenario.expected:
            scenario.mark()

    digest = read_config_file(str(scenario.path)).digest
    watcher = ConfigWatcher(str(scenario.path), on_change, initial_digest=digest, **options)  # type: ignore[arg-type]
    watcher.start()
    scenario.stop = watcher.stop


def build(root: Path, change: str) -> list[Scenario]:
    bare = prepare(root, "bare watchdog", change)
    start_bare(bare)
    inotify = prepare(root, "watcher inotify", change)
    start_watcher(inotify)
    polling = prepare(root, "watcher poll 50ms", change)
    start_watcher(polling, use_events=False, poll_interval=0.05)
    return [bare, inotify, polling]


def report(change: str, scenarios: list[Scenario]) -> None:
    base = scenarios[0].latencies_ms
    base_p50, base_p99 = percentile(base, 0.5), percentile(base, 0.99)
    for s in scenarios:
        lat = s.latencies_ms
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        ratios = f"{p50 / base_p50:7.2f}x {p99 / base_p99:7.2f}x"
        print(
            f"{change:8} {s.name:18} {len(lat):6} {s.missed:6} {p50:8.3f} {p99:8.3f} "
            f"{max(lat):8.1f} {statistics.mean(lat):8.3f} {ratios}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200, help="trials per scenario (>= 200)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(
        f"{'change':8} {'scenario':18} {'trials':>6} {'missed':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'mean ms':>8} {'p50/base':>8} {'p99/base':>8}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores; compare ratios, not ms)")
    gaps = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="mira-watch-bench-") as tmp:
        for change in CHANGES:
            scenarios = build(Path(tmp), change)
            try:
                for block_start in range(0, args.trials, BLOCK):
                    for scenario in scenarios:
                        for value in range(block_start, min(block_start + BLOCK, args.trials)):
                            scenario.trial(value + 1)
                            time.sleep(gaps.uniform(*GAP_RANGE))
            finally:
                for scenario in scenarios:
                    scenario.stop()
            report(change, scenarios)


if __name__ == "__main__":
    main()
