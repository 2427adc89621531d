"""Publish a plan to GitHub or Jira idempotently: list what exists, create only what is missing."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, TypeVar

import structlog

from mira.domain.messages import InvalidMessage
from mira.plans.domain import MAX_DESCRIPTION, MAX_GOALS
from mira.plans.ports import Current, GithubPort, IntegrationUnavailable, JiraPort

log = structlog.get_logger("mira.integrations")

C = TypeVar("C")
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
_PROJECT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TARGETS = ("github", "jira")
#: a plan's milestones, and its milestones and tasks together: one upstream write each at most
MAX_MILESTONES = MAX_GOALS
MAX_WRITES = 200
#: characters of a milestone's or task's title (GitHub's own limit) and of its text
MAX_TITLE = 256
MAX_TEXT = MAX_DESCRIPTION


Holder = Current[C] | IntegrationUnavailable | None


def publish_plan(
    data: Mapping[str, Any],
    *,
    github: Holder[GithubPort],
    jira: Holder[JiraPort],
    make_plan: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Handle `{"type": "publish_plan", "data": ...}`; returns what was created and what existed."""
    target = _target(data)
    destination = _destination(data, target)
    plan = _plan(data, make_plan)
    if target == "github":
        return _publish_github(_available("github", github), destination, plan)
    return _publish_jira(_available("jira", jira), destination, plan)


def _target(data: Mapping[str, Any]) -> str:
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


def _destination(data: Mapping[str, Any], target: str) -> str:
    if target == "github":
        repository = data.get("repository")
        if not isinstance(repository, str) or not _REPOSITORY.match(repository):
            raise InvalidMessage("data.repository", f"must be owner/name, got {_short(repository)}")
        return repository
    project = data.get("project")
    if project is None:
        raise InvalidMessage(
            "data.project", "is required for target jira (a project key like PROJ)"
        )
    if not isinstance(project, str) or not _PROJECT.match(project):
        raise InvalidMessage(
            "data.project", f"must be a Jira project key like PROJ, got {_short(project)}"
        )
    return project.upper()


def _plan(data: Mapping[str, Any], make_plan: Callable[..., dict[str, Any]]) -> dict[str, Any]:
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


def _available(integration: str, holder: Holder[C]) -> Current[C]:
    if holder is None:
        raise IntegrationUnavailable(integration, f"integrations.{integration}.enabled is false")
    if isinstance(holder, IntegrationUnavailable):
        raise IntegrationUnavailable(holder.integration, holder.reason)
    return holder


def _result(target: str, where: str, created: Ledger, existing: Ledger) -> dict[str, Any]:
    place = "repository" if target == "github" else "project"
    return {"target": target, place: where, "created": created, "existing": existing}


Ledger = dict[str, list[str]]


def _ledgers() -> tuple[Ledger, Ledger]:
    return {"milestones": [], "issues": []}, {"milestones": [], "issues": []}


def _publish_github(
    holder: Current[GithubPort], repo: str, plan: Mapping[str, Any]
) -> dict[str, Any]:
    # Each call reads holder.current() afresh so a credential swap applies from the next call.
    created, existing = _ledgers()
    numbers = {m["title"]: m["number"] for m in holder.current().list_milestones(repo)}
    for milestone in plan["milestones"]:
        title = milestone["title"]
        if title in numbers:
            existing["milestones"].append(title)
            continue
        due = milestone.get("due_date")
        made = holder.current().create_milestone(
            repo, title, str(milestone.get("goal") or ""), f"{due}T00:00:00Z" if due else None
        )
        numbers[title] = made["number"]
        created["milestones"].append(title)
    titles = {issue["title"] for issue in holder.current().list_issues(repo)}
    for milestone in plan["milestones"]:
        for task in milestone.get("tasks", []):
            if task["title"] in titles:
                existing["issues"].append(task["title"])
                continue
            body = _task_body(task, milestone)
            holder.current().create_issue(repo, task["title"], body, numbers[milestone["title"]])
            titles.add(task["title"])
            created["issues"].append(task["title"])
    log.info("plan_published", target="github", repository=repo, created=_counts(created))
    return _result("github", repo, created, existing)


def _publish_jira(
    holder: Current[JiraPort], project: str, plan: Mapping[str, Any]
) -> dict[str, Any]:
    created, existing = _ledgers()
    seen: set[tuple[str, str]] = set()  # Jira's search index may lag behind a fresh create
    has_epic = "Epic" in holder.current().issue_types(project)
    for i, milestone in enumerate(plan["milestones"]):
        label = _label(milestone, i)
        items = [(t["title"], _task_body(t, milestone), "Task") for t in milestone.get("tasks", [])]
        if has_epic:
            items.insert(0, (milestone["title"], str(milestone.get("goal") or ""), "Epic"))
        for summary, text, kind in items:
            ledger = "milestones" if kind == "Epic" else "issues"
            if (summary, kind) in seen or holder.current().find_issues(project, summary, kind):
                existing[ledger].append(summary)
            else:
                holder.current().create_issue(project, summary, text, kind, (label, "mira"))
                created[ledger].append(summary)
            seen.add((summary, kind))
    log.info("plan_published", target="jira", project=project, created=_counts(created))
    return _result("jira", project, created, existing)


def _label(milestone: Mapping[str, Any], index: int) -> str:
    raw = str(milestone.get("id") or f"m{index + 1}")
    return "mira-" + re.sub(r"[^A-Za-z0-9_-]+", "-", raw)


def _task_body(task: Mapping[str, Any], milestone: Mapping[str, Any]) -> str:
    lines = [str(task.get("description") or "").strip(), ""]
    week = f", week {task['week']}" if task.get("week") is not None else ""
    lines.append(f"Milestone: {milestone['title']}{week}.")
    return "\n".join(lines).strip()


def _counts(ledger: Ledger) -> dict[str, int]:
    return {kind: len(titles) for kind, titles in ledger.items()}
