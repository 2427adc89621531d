"""Config history folded from journal records: generations accepted and rejected, and diffs.

Generation numbers restart at 1 with every start of the service (each start loads generation
1), so an entry is also named by its journal position: `@POS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mira.domain.config.schema import flatten
from mira.domain.journal_record import JournalRecord
from mira.domain.secret_value import MASK

CONFIG_TYPES = ("ConfigLoaded", "ConfigChanged", "ConfigRejected", "ConfigNeedsRestart")


class HistoryError(ValueError):
    """A generation that the history does not hold (the message says which)."""


@dataclass(frozen=True)
class HistoryEntry:
    position: int
    time: float
    generation: int | None  # None: nothing was applied
    source: str
    digest: str | None
    changed_keys: tuple[str, ...]
    accepted: bool
    reasons: tuple[str, ...]
    settings: dict[str, Any] | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The JSON line `mira config history --json` prints (no settings)."""
        return {
            "generation": self.generation,
            "position": self.position,
            "time": self.time,
            "source": self.source,
            "digest": self.digest,
            "changed_keys": list(self.changed_keys),
            "accepted": self.accepted,
            "reasons": list(self.reasons),
        }


def _entry(record: JournalRecord) -> HistoryEntry | None:
    f, kind = record.fields, record.type
    if kind not in CONFIG_TYPES:
        return None
    accepted = kind in ("ConfigLoaded", "ConfigChanged")
    if kind == "ConfigRejected":
        reasons = tuple(f.get("reasons", ()))
    elif kind == "ConfigNeedsRestart":
        reasons = ("needs a restart: " + ", ".join(f.get("restart_required", ())),)
    else:
        reasons = ()
    keys = f.get("changed_keys") or f.get("restart_required") or ()
    return HistoryEntry(
        position=record.position,
        time=record.at,
        generation=f.get("generation") if accepted else None,
        source=str(f.get("source", "")),
        digest=f.get("settings_digest"),
        changed_keys=tuple(keys),
        accepted=accepted,
        reasons=reasons,
        settings=f.get("settings"),
    )


def config_history(records: Iterable[JournalRecord]) -> list[HistoryEntry]:
    """Every config decision in journal order."""
    return [e for r in records if (e := _entry(r)) is not None]


def find_generation(entries: list[HistoryEntry], ref: str) -> HistoryEntry:
    """`N`: the latest accepted generation N (the current start's); `@POS`: at that position."""
    text = ref.strip()
    try:
        number = int(text[1:] if text.startswith("@") else text)
    except ValueError:
        why = f"{ref!r} is not a generation (N) or a journal position (@POS)"
        raise HistoryError(why) from None
    if text.startswith("@"):
        found = [e for e in entries if e.position == number and e.accepted]
    else:
        found = [e for e in entries if e.generation == number and e.accepted]
    if not found or found[-1].settings is None:
        raise HistoryError(f"no accepted generation {ref} in the journal")
    return found[-1]


@dataclass(frozen=True)
class DiffLine:
    key: str
    before: Any
    after: Any
    masked: bool = False  # a secret key changed, both values masked


def diff_generations(entries: list[HistoryEntry], a: str, b: str) -> list[DiffLine]:
    """The masked difference between two accepted generations, by key."""
    first, second = find_generation(entries, a), find_generation(entries, b)
    before, after = flatten(first.settings or {}), flatten(second.settings or {})
    lines = [
        DiffLine(k, before.get(k), after.get(k))
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k)
    ]
    low, high = sorted((first.position, second.position))
    between = {
        k for e in entries if e.accepted and low < e.position <= high for k in e.changed_keys
    }
    shown = {line.key for line in lines}
    for key in sorted(between - shown):
        if before.get(key) == after.get(key) == MASK:
            lines.append(DiffLine(key, before[key], after[key], masked=True))
    return sorted(lines, key=lambda line: line.key)
