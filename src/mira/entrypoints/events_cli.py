"""`mira events` and `mira config history|diff`: the journal file (read-only) or `--url`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from mira.adapters.sqlite_journal import JournalUnavailable, open_reader, read_records
from mira.domain.config.history import (
    CONFIG_TYPES,
    HistoryEntry,
    HistoryError,
    config_history,
    diff_generations,
)
from mira.domain.journal_record import JournalRecord, iso_time
from mira.entrypoints import events_remote
from mira.entrypoints.events_format import history_row, record_line, record_row

FOLLOW_INTERVAL = 0.25
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CliError(Exception):
    """A one-line error for stderr; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def parse_since(text: str, now: float) -> tuple[int, float | None]:
    """`42` (after position 42), an ISO time, or an age like `-10m`: (position, time)."""
    value = text.strip()
    if value.isdigit():
        return int(value), None
    if value.startswith("-") and value[-1:] in _UNITS and value[1:-1].isdigit():
        return 0, now - int(value[1:-1]) * _UNITS[value[-1]]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"--since {text!r}: expected a position (42), an ISO time (2024-05-01T03:12:00Z) "
            "or an age (-30s, -10m, -2h, -1d)",
            code=2,
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a time without a zone is local time
    return 0, moment.timestamp()


def journal_path(args: argparse.Namespace) -> str:
    """`--journal`, else the `journal.path` of `--config`; a CliError when neither gives one."""
    if args.journal:
        return str(args.journal)
    if not args.config:
        raise CliError("--journal PATH is required (or --config FILE with journal.path)", 2)
    from mira.adapters.config_file import read_config_file
    from mira.domain.config.json_text import parse_json
    from mira.domain.config.loading import apply_environment

    # Only journal.path is read: a file a reload rejected still names its journal.
    snapshot = read_config_file(args.config)
    if snapshot.text is None:
        raise CliError(f"{snapshot.error}", 2)
    raw, problem = parse_json(snapshot.text, args.config)
    if problem:
        raise CliError(problem, 2)
    merged, _ = apply_environment(raw, os.environ)
    section = merged.get("journal") if isinstance(merged, dict) else None
    path = section.get("path") if isinstance(section, dict) else None
    if not isinstance(path, str) or not path.strip():
        raise CliError(f"{args.config}: journal.path is not set (events are in memory only)", 2)
    return path


def _source(args: argparse.Namespace) -> str:
    """The management listener's URL (`--url`), else the journal file's path."""
    return str(args.url) if getattr(args, "url", None) else journal_path(args)


def _read(path: str, **filters: Any) -> list[JournalRecord]:
    if path.startswith(("http://", "https://")):
        try:
            return events_remote.read_records(path, **filters)
        except events_remote.RemoteError as exc:
            raise CliError(str(exc), exc.code) from None
    try:
        conn = open_reader(path)
    except JournalUnavailable as exc:
        raise CliError(f"journal {exc.path}: {exc.reason}") from None
    try:
        return read_records(conn, path, **filters)
    except JournalUnavailable as exc:
        raise CliError(f"journal {exc.path}: {exc.reason}") from None
    finally:
        conn.close()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def events(args: argparse.Namespace) -> int:
    path = _source(args)
    after, since_time = parse_since(args.since, time.time()) if args.since else (0, None)
    filters: dict[str, Any] = {"types": args.type or (), "correlation_id": args.correlation_id}
    show: Callable[[JournalRecord], str] = record_line if args.json else record_row
    identity = _identity(path)
    while True:
        for record in _read(path, after=after, since_time=since_time, **filters):
            print(show(record))
            after = record.position
        if not args.follow:
            return 0
        sys.stdout.flush()
        time.sleep(FOLLOW_INTERVAL)  # polling the file: what a tail does
        now = _identity(path)
        if now is not None and now != identity:  # moved aside and started again: from 0
            identity, after = now, 0


def history(args: argparse.Namespace) -> int:
    if args.url:
        return _remote_history(args)
    for entry in config_history(_read(journal_path(args), types=CONFIG_TYPES)):
        print(
            json.dumps({**entry.summary(), "time": iso_time(entry.time)})
            if args.json
            else history_row(entry)
        )
    return 0


def _remote_history(args: argparse.Namespace) -> int:
    try:
        rows = events_remote.history(args.url)
    except events_remote.RemoteError as exc:
        raise CliError(str(exc), exc.code) from None
    for row in rows:
        entry = HistoryEntry(
            row["position"],
            row["at"],
            row["generation"],
            row["source"],
            row["digest"],
            tuple(row["changed_keys"]),
            row["accepted"],
            tuple(row["reasons"]),
        )
        print(
            json.dumps({**entry.summary(), "time": row["time"]})
            if args.json
            else history_row(entry)
        )
    return 0


def diff(args: argparse.Namespace) -> int:
    entries = config_history(_read(_source(args), types=CONFIG_TYPES))
    try:
        lines = diff_generations(entries, args.a, args.b)
    except HistoryError as exc:
        raise CliError(str(exc)) from None
    for line in lines:
        if line.masked:
            print(f"{line.key}: changed (secret; values masked)")
        else:
            print(f"{line.key}: {json.dumps(line.before)} -> {json.dumps(line.after)}")
    if not lines:
        print(f"no differences between {args.a} and {args.b}")
    return 0


def _journal_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", metavar="PATH", help="the journal file (journal.path)")
    parser.add_argument("--config", metavar="FILE", help="take --journal from FILE's journal.path")
    parser.add_argument(
        "--url",
        metavar="URL",
        help="the management listener (http://HOST:PORT); the token from MIRA_MANAGEMENT_TOKEN",
    )


def register(sub: Any, config_sub: Any) -> None:
    """Add `events`, `config history` and `config diff` to the `mira` parser."""
    p = sub.add_parser("events", help="list (or --follow) the journaled events")
    _journal_options(p)
    p.add_argument("--type", action="append", metavar="T", help="only this event type (repeat)")
    p.add_argument("--since", metavar="POS|ISO-TIME|-10m", help="after a position, or since")
    p.add_argument("--correlation-id", metavar="ID", help="only events of this correlation id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(run=events)
    h = config_sub.add_parser("history", help="configuration generations, accepted and rejected")
    _journal_options(h)
    h.add_argument("--json", action="store_true", help="one JSON object a line")
    h.set_defaults(run=history)
    d = config_sub.add_parser("diff", help="the masked difference between two generations")
    d.add_argument("a", metavar="A", help="a generation N (this start's) or @POSITION")
    d.add_argument("b", metavar="B")
    _journal_options(d)
    d.set_defaults(run=diff)


def join_since(argv: Sequence[str]) -> list[str]:
    """`--since -10m` as `--since=-10m` (argparse would take `-10m` for an option)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--since" and arg.startswith("-"):
            out[-1] = f"--since={arg}"
        else:
            out.append(arg)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the chosen command; a CliError becomes one line on stderr and its exit code."""
    try:
        code: int = args.run(args)
        return code
    except CliError as exc:
        print(f"mira: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0
