"""An event as a journal row: type, correlation id, time and JSON-safe fields, never a secret.

Settings carried by config events are stored as the masked effective config (literal secret
values masked, `secret://` references kept) with a digest of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mira.domain.config.masking import masked_dict
from mira.domain.config.model import Settings


@dataclass(frozen=True)
class JournalRecord:
    """One journaled event as it is stored and read back."""

    position: int
    at: float
    type: str
    correlation_id: str
    fields: dict[str, Any]


def iso_time(at: float) -> str:
    """UTC with milliseconds: `2024-05-01T03:12:00.123Z`."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def record_dict(record: JournalRecord) -> dict[str, Any]:
    """What `mira events --json` prints and /admin/events answers, one record."""
    return {
        "position": record.position,
        "time": iso_time(record.at),
        "type": record.type,
        "correlation_id": record.correlation_id,
        "at": record.at,
        "fields": record.fields,
    }


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_digest(masked: dict[str, Any]) -> str:
    """`sha256:<hex>` of the masked effective config (key order does not matter)."""
    return "sha256:" + hashlib.sha256(canonical_json(masked).encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # enums and other small values: their text


def event_fields(event: Any) -> dict[str, Any]:
    """The event's own fields (all but `correlation_id` and `at`) as JSON-safe values."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        if f.name in ("correlation_id", "at"):
            continue
        value = getattr(event, f.name)
        if isinstance(value, Settings):
            masked = masked_dict(value)
            fields[f.name] = masked
            fields[f"{f.name}_digest"] = config_digest(masked)
        elif value is not None or f.metadata.get("log", True):
            fields[f.name] = _plain(value)
    return fields


def to_record(position: int, event: Any) -> JournalRecord:
    return JournalRecord(
        position=position,
        at=float(event.at),
        type=type(event).__name__,
        correlation_id=str(event.correlation_id),
        fields=event_fields(event),
    )


def matching(
    records: Iterable[JournalRecord],
    after: int = 0,
    since_time: float | None = None,
    types: Sequence[str] = (),
    correlation_id: str | None = None,
) -> list[JournalRecord]:
    """The records the journal file's query would select (`sqlite_journal.read_records`):
    after position `after`, at or after `since_time`, of `types`, of `correlation_id`."""
    return [
        r
        for r in records
        if r.position > after
        and (since_time is None or r.at >= since_time)
        and (not types or r.type in types)
        and (correlation_id is None or r.correlation_id == correlation_id)
    ]
