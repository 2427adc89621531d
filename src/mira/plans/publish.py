"""Publish a plan to GitHub or Jira idempotently: list what exists, create only what is missing."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog

from mira.plans.ports import Current, GithubPort, IntegrationUnavailable, JiraPort
from mira.plans.validation import destination_of, plan_of, target_of

log = structlog.get_logger("mira.integrations")

C = TypeVar("C")
Holder = Current[C] | IntegrationUnavailable | None


def publish_plan(
    data: Mapping[str, Any],
    *,
    github: Holder[GithubPort],
    jira: Holder[JiraPort],
    make_plan: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Handle `{"type": "publish_plan", "data": ...}`; returns what was created and what existed."""
    target = target_of(data)
    destination = destination_of(data, target)
    plan = plan_of(data, make_plan)
    if target == "github":
        return _publish_github(_available("github", github), destination, plan)
    return _publish_jira(_available("jira", jira), destination, plan)


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
