"""publish_plan's input: target, destination and plan checked, within stated bounds."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from mira.domain.messages import InvalidMessage
from mira.plans.domain import MAX_DESCRIPTION, MAX_GOALS

REPOSITORY = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
PROJECT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TARGETS = ("github", "jira")
#: a plan's milestones, and its milestones and tasks together: one upstream write each at most
MAX_MILESTONES = MAX_GOALS
MAX_WRITES = 200
#: characters of a milestone's or task's title (GitHub's own limit) and of its text
MAX_TITLE = 256
MAX_TEXT = MAX_DESCRIPTION


def target_of(data: Mapping[str, Any]) -> str:
    target = data.get("target")
    if target is None:
        raise InvalidMessage("data.target", "is required: github or jira")
    if target not in TARGETS:
        raise InvalidMessage("data.target", f"must be github or jira, got {_short(target)}")
    return str(target)


def _short(value: Any) -> str:
    """The value as the error quotes it: a short prefix of a string, else only its type."""
    if isinstance(value, str):
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    if isinstance(value, bool | float) or (isinstance(value, int) and value.bit_length() < 64):
        return repr(value)
    return type(value).__name__


def destination_of(data: Mapping[str, Any], target: str) -> str:
    if target == "github":
        repository = data.get("repository")
        if not isinstance(repository, str) or not REPOSITORY.match(repository):
            raise InvalidMessage("data.repository", f"must be owner/name, got {_short(repository)}")
        return repository
    project = data.get("project")
    if project is None:
        raise InvalidMessage(
            "data.project", "is required for target jira (a project key like PROJ)"
        )
    if not isinstance(project, str) or not PROJECT.match(project):
        raise InvalidMessage(
            "data.project", f"must be a Jira project key like PROJ, got {_short(project)}"
        )
    return project.upper()


def plan_of(data: Mapping[str, Any], make_plan: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    plan = data.get("plan")
    if plan is None:
        raise InvalidMessage("data.plan", "is required: a plan or generate_plan input")
    if not isinstance(plan, Mapping):
        raise InvalidMessage("data.plan", f"must be an object, got {type(plan).__name__}")
    if "milestones" in plan:
        full = dict(plan)
    else:
        try:
            full = make_plan(plan)
        except InvalidMessage as exc:  # generate_plan names fields of its own `data`
            raise InvalidMessage(exc.field.replace("data", "data.plan", 1), exc.reason) from None
    _check_plan(full)
    return full


def _check_plan(plan: Mapping[str, Any]) -> None:
    milestones = plan.get("milestones")
    if not isinstance(milestones, list):
        raise InvalidMessage("data.plan.milestones", "must be a list")
    if len(milestones) > MAX_MILESTONES:
        raise InvalidMessage("data.plan.milestones", f"must hold at most {MAX_MILESTONES}")
    writes = len(milestones)
    for i, milestone in enumerate(milestones):
        where = f"data.plan.milestones[{i}]"
        _check_item(milestone, where, ("goal",))
        if milestone.get("due_date") is not None:
            try:
                date.fromisoformat(str(milestone["due_date"]))
            except ValueError:
                raise InvalidMessage(f"{where}.due_date", "must be a date YYYY-MM-DD") from None
        tasks = milestone.get("tasks", [])
        if not isinstance(tasks, list):
            raise InvalidMessage(f"{where}.tasks", "must be a list")
        writes += len(tasks)
        if writes > MAX_WRITES:
            raise InvalidMessage(
                "data.plan", f"must hold at most {MAX_WRITES} milestones and tasks in all"
            )
        for j, task in enumerate(tasks):
            _check_item(task, f"{where}.tasks[{j}]", ("description",))


def _check_item(item: Any, where: str, texts: tuple[str, ...]) -> None:
    """A milestone or task: an object with a bounded title and bounded optional text."""
    if not isinstance(item, Mapping):
        raise InvalidMessage(where, "must be an object")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InvalidMessage(f"{where}.title", "must be a non-empty string")
    if len(title) > MAX_TITLE:
        raise InvalidMessage(f"{where}.title", f"must be at most {MAX_TITLE} characters")
    for name in ("id", *texts):
        value = item.get(name)
        if value is not None and not isinstance(value, str | int | float):
            raise InvalidMessage(f"{where}.{name}", "must be a string")
        if len(str(value or "")) > MAX_TEXT:
            raise InvalidMessage(f"{where}.{name}", f"must be at most {MAX_TEXT} characters")
    week = item.get("week")
    if week is not None and (not isinstance(week, int) or isinstance(week, bool)):
        raise InvalidMessage(f"{where}.week", "must be an integer")
