"""How `mira events` and `mira config history` print: table rows and JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mira.domain.config.history import HistoryEntry
from mira.domain.journal_record import JournalRecord

#: Longest field value a table row shows; --json prints everything.
SHOWN = 60


def iso_time(at: float) -> str:
    """UTC with milliseconds: `2024-05-01T03:12:00.123Z`."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def record_line(record: JournalRecord) -> str:
    """One JSON object: position, time, type, correlation_id, at (epoch seconds), fields."""
    return json.dumps(
        {
            "position": record.position,
            "time": iso_time(record.at),
            "type": record.type,
            "correlation_id": record.correlation_id,
            "at": record.at,
            "fields": record.fields,
        },
        separators=(",", ":"),
    )


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _fields(fields: dict[str, Any]) -> str:
    # The whole settings tree is too big for a row: its digest stands for it.
    shown = {k: v for k, v in fields.items() if k not in ("settings", "previous")}
    return " ".join(f"{k}={_short(v)}" for k, v in shown.items())


def record_row(record: JournalRecord) -> str:
    return (
        f"{record.position:>8}  {iso_time(record.at)}  {record.type:<22} "
        f"{record.correlation_id:<36}  {_fields(record.fields)}"
    ).rstrip()


def history_row(entry: HistoryEntry) -> str:
    generation = "-" if entry.generation is None else str(entry.generation)
    verdict = "accepted" if entry.accepted else "rejected"
    digest = (entry.digest or "-").removeprefix("sha256:")[:12]
    detail = ", ".join(entry.changed_keys) if entry.accepted else "; ".join(entry.reasons)
    return (
        f"{generation:>4}  @{entry.position:<7} {iso_time(entry.time)}  {verdict:<8}  "
        f"{digest:<12}  {entry.source}  {_short(detail) if entry.accepted else detail}"
    ).rstrip()
