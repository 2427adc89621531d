"""The journal's SQLite store, the durable journal, records, config history and --since (no
threads: everything runs on the test's thread against real SQLite files)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.adapters.durable_journal import RETRY_SECONDS, DurableJournal
from mira.adapters.memory_journal import InMemoryJournal
from mira.adapters.sqlite_journal import (
    JournalCorrupt,
    JournalUnavailable,
    SqliteStore,
    open_reader,
    read_records,
)
from mira.domain import events as ev
from mira.domain.config.history import HistoryError, config_history, diff_generations
from mira.domain.config.loading import load_settings
from mira.domain.config.model import Settings
from mira.domain.journal_record import JournalRecord, matching, to_record
from mira.entrypoints.events_cli import CliError, join_since, parse_since

SECRET = "literal-jira-token-1234"


def settings(marker: int, token: str | None = SECRET) -> Settings:
    jira = {"max_retries": marker, "api_token": token}
    text = json.dumps({"integrations": {"jira": jira, "github": {"token": "secret://ci:token"}}})
    result = load_settings(text, "c.json", {})
    assert result.settings is not None, result.errors
    return result.settings


def ready(n: int) -> ev.ServiceReady:
    return ev.ServiceReady(correlation_id=f"c{n}", at=1000.0 + n, generation=1)


def rows(path: Path) -> list[JournalRecord]:
    conn = open_reader(str(path))
    try:
        return read_records(conn, str(path))
    finally:
        conn.close()


def test_positions_continue_after_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    store = SqliteStore.open(path, max_events=100)
    for n in (1, 2, 3):
        store.append(to_record(n, ready(n)))
    store.close()
    again = SqliteStore.open(path, max_events=100)
    assert (again.first_position, again.last_position) == (1, 3)
    again.close()
    journal = DurableJournal(path)
    journal.open()
    journal.append(ready(4))
    journal.close()
    assert [r.position for r in rows(tmp_path / "j.db")] == [1, 2, 3, 4]
    assert rows(tmp_path / "j.db")[-1].correlation_id == "c4"


def test_retention_drops_the_oldest_and_keeps_positions_increasing(tmp_path: Path) -> None:
    path = str(tmp_path / "j.db")
    store = SqliteStore.open(path, max_events=3)
    for n in range(1, 6):
        store.append(to_record(n, ready(n)))
    assert (store.first_position, store.last_position) == (3, 5)
    store.close()
    journal = DurableJournal(path, max_events=3)
    journal.open()
    journal.append(ready(6))
    journal.close()
    assert [r.position for r in rows(tmp_path / "j.db")] == [4, 5, 6]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"after": 4},
        {"since_time": 1005.0},
        {"types": ["ServiceReady"]},
        {"correlation_id": "c6"},
    ],
)
def test_the_memory_journal_answers_the_same_query_as_the_file(
    tmp_path: Path, filters: dict[str, Any]
) -> None:
    """With journal.path null /admin filters this run's events in memory: the same selection,
    positions included, as the file would give, also once the bound dropped the oldest."""
    memory = InMemoryJournal(maxlen=5)
    store = SqliteStore.open(str(tmp_path / "j.db"), max_events=5)
    for n in range(1, 9):
        memory.append(ready(n))
        store.append(to_record(n, ready(n)))
    store.close()
    conn = open_reader(str(tmp_path / "j.db"))
    try:
        expected = read_records(conn, str(tmp_path / "j.db"), **filters)
    finally:
        conn.close()
    found = matching((to_record(p, e) for p, e in memory.entries()), **filters)
    assert found == expected
    assert [p for p, _ in memory.entries()] == [4, 5, 6, 7, 8]


def test_config_events_store_the_masked_config_and_its_digest_never_a_secret(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    journal = DurableJournal(str(path))
    journal.open()
    journal.append(
        ev.ConfigLoaded(
            correlation_id="c", at=1.0, source="c.json", generation=1, settings=settings(0)
        )
    )
    journal.close()
    (record,) = rows(path)
    stored = record.fields["settings"]
    assert stored["integrations"]["jira"]["api_token"] == "**********"
    assert stored["integrations"]["github"]["token"] == "secret://ci:token"
    assert record.fields["settings_digest"].startswith("sha256:")
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_the_redactor_masks_secret_values_in_any_field(tmp_path: Path) -> None:
    journal = DurableJournal(str(tmp_path / "j.db"), redact=lambda t: t.replace(SECRET, "***"))
    journal.open()
    journal.append(ev.HookFailed(correlation_id="c", at=1.0, hook="h", reason=f"bad {SECRET}"))
    journal.close()
    assert rows(tmp_path / "j.db")[0].fields["reason"] == "bad ***"


def test_a_corrupt_file_is_moved_aside_and_a_new_journal_started(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database" * 100)
    journal = DurableJournal(str(path), now=lambda: 0.0)
    with capture_logs() as logs:
        journal.open()
    journal.append(ready(1))
    journal.close()
    moved = tmp_path / "j.db.corrupt-19700101T000000Z"
    assert moved.read_bytes() == b"this is not a database" * 100
    assert [r.position for r in rows(path)] == [1]
    (warning,) = [line for line in logs if line["log_level"] == "warning"]
    assert str(path) in warning["event"] and warning["moved_to"] == str(moved)
    assert not journal.degraded and journal.status()["moved_aside"] == str(moved)


def test_another_programs_database_is_not_taken_for_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.close()
    with pytest.raises(JournalCorrupt, match="not a Mira event journal"):
        SqliteStore.open(str(path), 10)


def test_a_missing_directory_degrades_to_memory_and_says_why(tmp_path: Path) -> None:
    path = str(tmp_path / "absent" / "j.db")
    journal = DurableJournal(path)
    with capture_logs() as logs:
        journal.open()
    journal.append(ready(1))
    journal.append(ready(2))
    assert [e.correlation_id for e in journal.read()] == ["c1", "c2"]  # type: ignore[attr-defined]
    assert journal.read(since=1) == journal.read()[1:]
    status = journal.status()
    assert status["status"] == "degraded" and status["durable"] is False
    assert "does not exist" in status["reason"] and journal.readiness()[0] is True
    assert path in logs[0]["event"] and logs[0]["log_level"] == "warning"


def test_a_failing_write_degrades_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = DurableJournal(str(path))
    journal.open()
    journal.append(ready(1))
    with sqlite3.connect(path, timeout=0) as other:  # another writer holds the lock
        other.execute("BEGIN EXCLUSIVE")
        with capture_logs() as logs:
            journal.append(ready(2))
        other.rollback()
    journal.append(ready(3))
    assert journal.degraded and "locked" in (journal.degraded_reason or "")
    assert logs[0]["first_position_in_memory_only"] == 2
    assert [r.position for r in rows(path)] == [1]
    assert journal.position == 3 and len(journal.read()) == 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_once_the_file_can_be_written_again_the_next_event_writes_what_memory_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    clock = Clock()
    journal = DurableJournal(str(path), now=clock)
    journal.open()
    journal.append(ready(1))
    with sqlite3.connect(path, timeout=0) as other:  # another writer holds the lock
        other.execute("BEGIN EXCLUSIVE")
        journal.append(ready(2))
        clock.now += RETRY_SECONDS  # a try while it is still locked fails quietly
        with capture_logs() as quiet:
            journal.append(ready(3))
        other.rollback()
    assert quiet == [] and journal.degraded
    journal.append(ready(4))  # too soon after the last try: memory only
    assert [r.position for r in rows(path)] == [1]
    clock.now += RETRY_SECONDS
    with capture_logs() as logs:
        journal.append(ready(5))
    assert not journal.degraded and journal.status()["status"] == "ok"
    assert [r.position for r in rows(path)] == [1, 2, 3, 4, 5]
    assert [r.correlation_id for r in rows(path)] == ["c1", "c2", "c3", "c4", "c5"]
    assert logs[0]["event"] == f"Event journal {path} is written again"
    assert logs[0]["written_from_memory"] == 3 and logs[0]["lost"] == 0


def test_events_memory_could_not_keep_are_counted_as_lost(tmp_path: Path) -> None:
    directory = tmp_path / "later"
    clock = Clock()
    journal = DurableJournal(str(directory / "j.db"), memory_max=2, now=clock)
    journal.open()  # the directory is not there yet (a volume mounted late)
    for n in range(1, 5):
        journal.append(ready(n))
    directory.mkdir()
    clock.now += RETRY_SECONDS
    with capture_logs() as logs:
        journal.append(ready(5))
    assert [r.position for r in rows(directory / "j.db")] == [4, 5]
    assert logs[0]["written_from_memory"] == 1 and logs[0]["lost"] == 3


def test_reading_a_missing_or_garbage_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(JournalUnavailable, match="no such file"):
        open_reader(str(tmp_path / "none.db"))
    (tmp_path / "bad.db").write_bytes(b"\0garbage" * 600)
    with pytest.raises(JournalCorrupt, match=str(tmp_path / "bad.db")):
        open_reader(str(tmp_path / "bad.db"))


def record(position: int, event: Any) -> JournalRecord:
    return to_record(position, event)


def history_records() -> list[JournalRecord]:
    meta = {"correlation_id": "c", "source": "c.json"}
    old, new = settings(0), settings(1, token="another-literal-token")
    return [
        record(1, ev.ConfigLoaded(at=1.0, generation=1, settings=old, **meta)),
        record(2, ready(2)),
        record(3, ev.ConfigRejected(at=3.0, reasons=("c.json: logging.level: bad",), **meta)),
        record(
            4,
            ev.ConfigChanged(
                at=4.0,
                generation=2,
                settings=new,
                previous=old,
                changed_keys=("integrations.jira.api_token", "integrations.jira.max_retries"),
                **meta,
            ),
        ),
        record(5, ev.ConfigNeedsRestart(at=5.0, restart_required=("server.port",), **meta)),
    ]


def test_history_lists_accepted_and_rejected_generations() -> None:
    entries = [e.summary() for e in config_history(history_records())]
    assert [(e["generation"], e["accepted"], e["position"]) for e in entries] == [
        (1, True, 1),
        (None, False, 3),
        (2, True, 4),
        (None, False, 5),
    ]
    assert entries[1]["reasons"] == ["c.json: logging.level: bad"]
    assert entries[2]["changed_keys"] == [
        "integrations.jira.api_token",
        "integrations.jira.max_retries",
    ]
    assert entries[3]["reasons"] == ["needs a restart: server.port"]
    assert entries[0]["digest"] != entries[2]["digest"]


def test_diff_shows_values_and_marks_a_changed_secret_without_showing_it() -> None:
    entries = config_history(history_records())
    lines = {line.key: line for line in diff_generations(entries, "1", "@4")}
    assert (
        lines["integrations.jira.max_retries"].before,
        lines["integrations.jira.max_retries"].after,
    ) == (0, 1)
    assert lines["integrations.jira.api_token"].masked
    assert "another-literal-token" not in repr(lines) and SECRET not in repr(lines)
    with pytest.raises(HistoryError, match="no accepted generation 7"):
        diff_generations(entries, "1", "7")
    with pytest.raises(HistoryError, match="not a generation"):
        diff_generations(entries, "one", "2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", (42, None)),
        ("-10m", (0, 10_000.0 - 600)),
        ("-2h", (0, 10_000.0 - 7200)),
        ("1970-01-01T02:00:00Z", (0, 7200.0)),
        ("1970-01-01T03:00:00+01:00", (0, 7200.0)),
    ],
)
def test_since_takes_a_position_a_time_or_an_age(text: str, expected: Any) -> None:
    assert parse_since(text, now=10_000.0) == expected


@pytest.mark.parametrize("text", ["yesterday", "-10", "-10x", "10m", ""])
def test_since_that_cannot_be_parsed_is_a_usage_error(text: str) -> None:
    with pytest.raises(CliError, match="--since") as caught:
        parse_since(text, now=0.0)
    assert caught.value.code == 2


def test_a_negative_age_after_since_is_not_taken_for_an_option() -> None:
    assert join_since(["events", "--since", "-10m", "--json"]) == [
        "events",
        "--since=-10m",
        "--json",
    ]
