"""How `mira events` and `mira config history` print: table rows and JSON lines."""

from __future__ import annotations

import json
from typing import Any

from mira.domain.config.history import HistoryEntry
from mira.domain.journal_record import JournalRecord, iso_time, record_dict

#: Longest field value a table row shows; --json prints everything.
SHOWN = 60


def record_line(record: JournalRecord) -> str:
    """One JSON object: `record_dict`."""
    return json.dumps(record_dict(record), separators=(",", ":"))


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
