"""Plan generation and its input validation."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mira.domain.messages import InvalidMessage
from mira.plans.domain import (
    MAX_DESCRIPTION,
    MAX_GOALS,
    MAX_GOALS_TEXT,
    MAX_NAME,
    generate_plan,
    parse_plan_request,
)

TODAY = dt.date(2026, 11, 28)
VALID = {
    "name": "Launch",
    "description": "Go live",
    "goals": ["MVP", "Beta", "GA"],
    "duration_weeks": 12,
    "start_date": "2026-01-05",
}


def plan(**changes: object) -> dict[str, object]:
    return generate_plan(parse_plan_request({**VALID, **changes}, TODAY))


def test_milestones_are_spread_over_the_duration_with_due_dates() -> None:
    result = plan()
    milestones = result["milestones"]
    assert [m["week"] for m in milestones] == [4, 8, 12]  # type: ignore[index]
    assert [m["due_date"] for m in milestones] == ["2026-02-01", "2026-03-01", "2026-03-29"]  # type: ignore[index]
    assert result["end_date"] == "2026-03-29"
    for m in milestones:  # type: ignore[attr-defined]
        assert len(m["tasks"]) == 3
        assert all(1 <= t["week"] <= m["week"] for t in m["tasks"])


def test_start_date_defaults_to_today() -> None:
    assert plan(start_date=None)["start_date"] == "2026-11-28"


def test_more_goals_than_weeks_still_gives_valid_weeks() -> None:
    weeks = [m["week"] for m in plan(goals=["a", "b", "c", "d"], duration_weeks=2)["milestones"]]  # type: ignore[index, union-attr]
    assert weeks == sorted(weeks) and min(weeks) >= 1 and max(weeks) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"goals": []}, "data.goals"),
        ({"goals": "MVP"}, "data.goals"),
        ({"goals": ["ok", ""]}, "data.goals[1]"),
        ({"duration_weeks": 0}, "data.duration_weeks"),
        ({"duration_weeks": -3}, "data.duration_weeks"),
        ({"duration_weeks": "12"}, "data.duration_weeks"),
        ({"duration_weeks": True}, "data.duration_weeks"),
        ({"name": None}, "data.name"),
        ({"name": 5}, "data.name"),
        ({"start_date": "05/01/2026"}, "data.start_date"),
    ],
)
def test_bad_input_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_plan_request({**VALID, **change}, TODAY)
    assert info.value.field == field


def test_missing_duration_is_named() -> None:
    data = {k: v for k, v in VALID.items() if k != "duration_weeks"}
    with pytest.raises(InvalidMessage, match=r"data\.duration_weeks: is required"):
        parse_plan_request(data, TODAY)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"goals": ["g"] * (MAX_GOALS + 1)}, "data.goals"),
        ({"goals": ["g" * (MAX_NAME + 1)]}, "data.goals[0]"),
        ({"goals": ["g" * 200] * 26}, "data.goals"),  # 5200 characters in all
        ({"name": "n" * (MAX_NAME + 1)}, "data.name"),
        ({"name": "   "}, "data.name"),
        ({"description": "d" * (MAX_DESCRIPTION + 1)}, "data.description"),
        ({"start_date": "9999-12-31"}, "data.start_date"),
        ({"start_date": "9999-12-01", "duration_weeks": 5}, "data.start_date"),
    ],
)
def test_input_over_the_bounds_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_plan_request({**VALID, **change}, TODAY)
    assert info.value.field == field


def test_the_last_possible_start_date_still_gives_a_plan() -> None:
    last = dt.date.max - dt.timedelta(weeks=12)
    assert plan(start_date=last.isoformat())["end_date"] == "9999-12-30"


def test_a_plan_of_the_largest_accepted_input_is_bounded() -> None:
    goals = ["g" * (MAX_GOALS_TEXT // MAX_GOALS)] * MAX_GOALS
    result = plan(name="n" * MAX_NAME, goals=goals, description="d" * MAX_DESCRIPTION)
    assert len(json.dumps(result)) < 200_000
