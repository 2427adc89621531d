"""Plan generation: a pure function from a validated request to a plan, within stated bounds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mira.domain.messages import InvalidMessage, require

MAX_WEEKS = 520
MAX_GOALS = 50
#: characters of one name or goal, of the description, and of all goals together
MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_GOALS_TEXT = 5000
TASK_STEPS = (("Plan", 0.0), ("Build", 0.34), ("Review", 0.67))


@dataclass(frozen=True)
class PlanRequest:
    name: str
    description: str
    goals: tuple[str, ...]
    duration_weeks: int
    start_date: dt.date


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidMessage(where, "must be a non-empty string")
    if len(value) > limit:
        raise InvalidMessage(where, f"must be at most {limit} characters")
    return value.strip()


def _goals(data: Mapping[str, Any]) -> tuple[str, ...]:
    goals = require(data, "goals", list)
    if not goals:
        raise InvalidMessage("data.goals", "must contain at least one goal")
    if len(goals) > MAX_GOALS:
        raise InvalidMessage("data.goals", f"must contain at most {MAX_GOALS} goals")
    texts = tuple(_text(goal, f"data.goals[{i}]", MAX_NAME) for i, goal in enumerate(goals))
    if sum(len(g) for g in texts) > MAX_GOALS_TEXT:
        raise InvalidMessage("data.goals", f"must hold at most {MAX_GOALS_TEXT} characters in all")
    return texts


def _start(data: Mapping[str, Any], weeks: int, today: dt.date) -> dt.date:
    start = today
    if data.get("start_date") is not None:
        raw = require(data, "start_date", str)
        try:
            start = dt.date.fromisoformat(raw)
        except ValueError:
            raise InvalidMessage("data.start_date", "must be a date like 2026-01-05") from None
    if (dt.date.max - start).days < weeks * 7:
        raise InvalidMessage(
            "data.start_date", f"leaves no room for {weeks} weeks before {dt.date.max}"
        )
    return start


def parse_plan_request(data: Any, today: dt.date) -> PlanRequest:
    """Validate generate_plan's `data`; `today` is the start when no start_date is given."""
    if not isinstance(data, Mapping):
        raise InvalidMessage("data", "must be an object")
    goals = _goals(data)
    weeks = require(data, "duration_weeks", int)
    if not 0 < weeks <= MAX_WEEKS:
        raise InvalidMessage("data.duration_weeks", f"must be between 1 and {MAX_WEEKS}")
    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise InvalidMessage("data.description", "must be a string")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidMessage("data.description", f"must be at most {MAX_DESCRIPTION} characters")
    return PlanRequest(
        name=_text(require(data, "name", str), "data.name", MAX_NAME),
        description=description.strip(),
        goals=goals,
        duration_weeks=weeks,
        start_date=_start(data, weeks, today),
    )


def _week_end(start: dt.date, week: int) -> str:
    return (start + dt.timedelta(weeks=week, days=-1)).isoformat()


def generate_plan(req: PlanRequest) -> dict[str, Any]:
    """One milestone per goal, spread evenly over the duration, each with three tasks."""
    n = len(req.goals)
    milestones = []
    previous_week = 0
    for i, goal in enumerate(req.goals, start=1):
        week = max(1, round(i * req.duration_weeks / n))
        first = min(previous_week + 1, week)
        span = week - first
        tasks = [
            {
                "id": f"m{i}-t{j}",
                "title": f"{step}: {goal}",
                "description": f"{step} work towards '{goal}' for {req.name}.",
                "week": first + int(span * share),
            }
            for j, (step, share) in enumerate(TASK_STEPS, start=1)
        ]
        milestones.append(
            {
                "id": f"m{i}",
                "title": goal,
                "goal": goal,
                "week": week,
                "due_date": _week_end(req.start_date, week),
                "tasks": tasks,
            }
        )
        previous_week = week
    return {
        "name": req.name,
        "description": req.description,
        "start_date": req.start_date.isoformat(),
        "end_date": _week_end(req.start_date, req.duration_weeks),
        "duration_weeks": req.duration_weeks,
        "milestones": milestones,
    }
