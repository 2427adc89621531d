"""The durable journal with the real service: real SQLite files, real restarts, real `mira`
processes reading them, and the bad files and disks an operator meets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_hot_reload import atomic_save, base_config, metric, svc_config
from tests.support import ServiceProcess, free_port, wait_until

pytestmark = pytest.mark.integration

SECRET = "literal-jira-token-never-journaled"
DEADLINE = 10.0


def mira(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def events(journal: Path, *args: str) -> list[dict[str, Any]]:
    done = mira("events", "--journal", str(journal), "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def journal_status(svc: ServiceProcess) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(svc.get("/ready")[2])["journal"]
    return status


def config_with(journal: Path, marker: int = 0, **sections: Any) -> dict[str, Any]:
    config = base_config(marker, journal={"path": str(journal)}, **sections)
    config["integrations"]["jira"]["api_token"] = SECRET
    config["server"]["port"] = free_port()
    return config


@contextlib.contextmanager
def service(workdir: Path, config: dict[str, Any]) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(workdir, config)
    try:
        yield svc.start()
    finally:
        svc.stop()


def reload_to(svc: ServiceProcess, journal: Path, marker: int, **sections: Any) -> None:
    """A new version on disk; its literal secret changes with the marker."""
    config = svc_config(svc, marker, journal={"path": str(journal)}, **sections)
    config["integrations"]["jira"]["api_token"] = f"{SECRET}-{marker}"
    atomic_save(svc.config_path, json.dumps(config))


def test_events_survive_a_restart_and_positions_continue(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    svc = ServiceProcess(tmp_path, config_with(journal)).start()
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit() == 0
    first = events(journal)
    assert [e["type"] for e in first][:2] == ["ConfigLoaded", "ServiceReady"]
    assert first[-1]["type"] == "Stopped"
    with service(tmp_path, json.loads(svc.config_path.read_text())):
        after = events(journal)
    positions = [e["position"] for e in after]
    assert positions == list(range(1, len(after) + 1))
    restarted = after[len(first)]
    assert restarted["type"] == "ConfigLoaded" and restarted["position"] == len(first) + 1
    assert restarted["correlation_id"] != first[0]["correlation_id"]
    assert {"position", "time", "type", "correlation_id"} <= set(after[0])
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("events.db*"))


def test_history_lists_accepted_and_rejected_generations_and_diffs_them(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    with service(tmp_path, config_with(journal)) as svc:
        reload_to(svc, journal, 1)
        wait_until(lambda: events(journal, "--type", "ConfigChanged"), DEADLINE, message="change")
        reload_to(svc, journal, 2, logging={"level": "LOUD"})
        wait_until(lambda: events(journal, "--type", "ConfigRejected"), DEADLINE, message="reject")
        done = mira("config", "history", "--config", str(svc.config_path), "--json")
    assert done.returncode == 0, done.stderr
    history = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(h["generation"], h["accepted"]) for h in history] == [
        (1, True),
        (2, True),
        (None, False),
    ]
    assert history[1]["changed_keys"] == [
        "integrations.jira.api_token",
        "integrations.jira.max_retries",
    ]
    assert "logging.level" in history[2]["reasons"][0]
    assert all(h["source"] == str(svc.config_path) for h in history)
    assert history[0]["digest"] != history[1]["digest"]
    diff = mira("config", "diff", "1", "2", "--journal", str(journal))
    assert diff.returncode == 0, diff.stderr
    assert "integrations.jira.max_retries: 0 -> 1" in diff.stdout
    assert "integrations.jira.api_token: changed (secret; values masked)" in diff.stdout
    assert SECRET not in done.stdout + diff.stdout
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("events.db*"))


def test_events_follow_sees_a_reload_happen(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    with service(tmp_path, config_with(journal)) as svc:
        follow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mira.entrypoints.cli",
                "events",
                "--follow",
                "--json",
                "--journal",
                str(journal),
                "--since",
                "-5m",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        seen: list[dict[str, Any]] = []
        reader = threading.Thread(
            target=lambda: seen.extend(json.loads(line) for line in follow.stdout or ()),
            daemon=True,
        )
        reader.start()
        try:
            wait_until(lambda: any(e["type"] == "ServiceReady" for e in seen), DEADLINE)
            assert not any(e["type"] == "ConfigChanged" for e in seen)
            reload_to(svc, journal, 1)
            wait_until(lambda: any(e["type"] == "ConfigChanged" for e in seen), DEADLINE)
        finally:
            follow.kill()
            follow.wait(10)
    changed = next(e for e in seen if e["type"] == "ConfigChanged")
    assert changed["fields"]["generation"] == 2


def test_a_corrupt_journal_is_moved_aside_with_the_service_up(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    journal.write_bytes(b"not sqlite at all\n" * 200)
    with service(tmp_path, config_with(journal)) as svc:
        status = journal_status(svc)
        warnings = [line for line in svc.lines() if str(journal) in line.get("message", "")]
    moved = Path(status["moved_aside"])
    assert status["status"] == "ok" and moved.parent == tmp_path
    assert moved.read_bytes() == b"not sqlite at all\n" * 200
    assert warnings and warnings[0]["level"] == "WARNING" and warnings[0]["reason"]
    assert [e["type"] for e in events(journal)][:2] == ["ConfigLoaded", "ServiceReady"]
    done = mira("events", "--journal", str(moved))
    assert done.returncode != 0 and str(moved) in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_truncated_journal_is_moved_aside_and_its_bytes_kept(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    with service(tmp_path, config_with(journal)) as svc:
        for marker in range(1, 4):
            reload_to(svc, journal, marker)
            wait_until(lambda m=marker: len(events(journal, "--type", "ConfigChanged")) == m)
        svc.signal(signal.SIGTERM)  # a clean stop: everything checkpointed into the file
        assert svc.wait_exit() == 0
    assert not Path(f"{journal}-wal").exists()
    cut = journal.read_bytes()[: journal.stat().st_size // 2]
    journal.write_bytes(cut)
    with service(tmp_path, config_with(journal)) as svc:
        status = journal_status(svc)
    assert status["status"] == "ok", status
    assert Path(status["moved_aside"]).read_bytes() == cut
    assert [e["position"] for e in events(journal)][:1] == [1]  # a new journal


def assert_degraded(svc: ServiceProcess, journal: Path, why: str) -> dict[str, Any]:
    status = journal_status(svc)
    assert status["status"] == "degraded" and why in status["reason"], status
    assert metric(svc, "mira_journal_degraded") == 1.0
    assert svc.get("/health")[0] == 200 and svc.get("/ready")[0] == 200
    lines = [line for line in svc.lines() if str(journal) in line.get("message", "")]
    assert lines and lines[0]["level"] == "WARNING" and why in lines[0]["reason"]
    return status


def test_a_missing_directory_keeps_serving_and_reports_the_degradation(tmp_path: Path) -> None:
    journal = tmp_path / "absent" / "events.db"
    with service(tmp_path, config_with(journal)) as svc:
        assert_degraded(svc, journal, "does not exist")
        reload_to(svc, journal, 1)
        wait_until(lambda: json.loads(svc.get("/ready")[2])["config"]["generation"] == 2)
    assert not journal.parent.exists()


def test_a_locked_journal_keeps_serving_and_reports_the_degradation(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    with service(tmp_path, config_with(journal)):
        pass
    before = events(journal)
    holder = sqlite3.connect(journal, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with service(tmp_path, config_with(journal)) as svc:
            assert_degraded(svc, journal, "locked")
    finally:
        holder.rollback()
        holder.close()
    assert events(journal)[: len(before)] == before


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (mount exited {done.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_directory_keeps_serving_and_reports_the_degradation(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as directory:
        journal = directory / "events.db"
        with service(tmp_path, config_with(journal)) as svc:
            assert_degraded(svc, journal, "is not writable")


def fill(directory: Path) -> None:
    """Write until the file system is full (ENOSPC), smaller and smaller chunks."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def reload_until(
    svc: ServiceProcess, journal: Path, marker: int, done: Callable[[], bool], every: float = 0.0
) -> int:
    """Reload to new versions (each one an event to journal), one at most every `every`
    seconds, until `done` (within 30 s and 200 reloads); the last marker."""
    deadline = time.monotonic() + 30
    for _ in range(200):
        if done():
            return marker
        assert time.monotonic() < deadline, "the journal never changed its status in 30 s"
        started = time.monotonic()
        marker += 1
        reload_to(svc, journal, marker)
        wait_until(
            lambda m=marker: json.loads(svc.get("/ready")[2])["config"]["generation"] == m + 1
        )
        time.sleep(max(0.0, every - (time.monotonic() - started)))  # pacing the events
    raise AssertionError("the journal never changed its status in 200 reloads")


def test_a_full_disk_keeps_serving_reports_it_and_loses_nothing_written(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=1m") as directory:
        journal = directory / "events.db"
        with service(tmp_path, config_with(journal)) as svc:
            written = events(journal)
            fill(directory)
            reload_until(svc, journal, 0, lambda: journal_status(svc)["status"] != "ok")
            status = assert_degraded(svc, journal, "full")
            assert status["position"] > written[-1]["position"]
        (directory / "filler").unlink()
        kept = events(journal)
    assert kept[: len(written)] == written


def test_once_the_disk_has_room_again_the_journal_catches_up_with_the_service_up(
    tmp_path: Path,
) -> None:
    """Freed space is found by the next event (RETRY_SECONDS after the last try): the events
    kept in memory meanwhile are written, in order, and the degradation clears."""
    with tmpfs(tmp_path / "small", "size=1m") as directory:
        journal = directory / "events.db"
        with service(tmp_path, config_with(journal)) as svc:
            fill(directory)
            marker = reload_until(svc, journal, 0, lambda: journal_status(svc)["status"] != "ok")
            assert_degraded(svc, journal, "full")
            (directory / "filler").unlink()
            ok = lambda: journal_status(svc)["status"] == "ok"  # noqa: E731
            reload_until(svc, journal, marker, ok, every=0.5)
            assert metric(svc, "mira_journal_degraded") == 0.0
            position = journal_status(svc)["position"]
            again = [x for x in svc.lines() if x.get("message", "").endswith("is written again")]
            assert again and again[0]["lost"] == 0 and again[0]["written_from_memory"] >= 1
        positions = [e["position"] for e in events(journal)]
    assert positions == list(range(1, position + 1))  # every event, none lost
