"""Publish a plan to GitHub or Jira idempotently: list what exists, create only what is missing."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Generic, Protocol, TypeVar

import structlog

from mira.domain.messages import InvalidMessage, MessageError

log = structlog.get_logger("mira.integrations")

C = TypeVar("C")
T_co = TypeVar("T_co", covariant=True)
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
_PROJECT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TARGETS = ("github", "jira")
__all__ = ["ClientHolder", "IntegrationUnavailable", "InvalidMessage", "publish_plan"]


class IntegrationUnavailable(MessageError):
    """The integration is disabled or lacks configuration; `reason` names what is missing.

    409: the request is well formed but the service's configuration cannot carry it out; the
    operator (not the caller) must act, and repeating the request unchanged will not help.
    """

    status = 409

    def __init__(self, integration: str, reason: str) -> None:
        super().__init__(f"{integration} integration unavailable: {reason}")
        self.integration = integration
        self.reason = reason
        #: the setting to fix (e.g. "integrations.github.token"), reported as the error's field
        first = reason.split(" ", 1)[0].rstrip(":,")
        self.field = first if first.startswith("integrations.") else None


class Current(Protocol[T_co]):
    def current(self) -> T_co: ...


class ClientHolder(Generic[C]):
    """Holds the live client; readers never lock, a swap leaves calls in flight on the old one."""

    __slots__ = ("_client", "_lock")

    def __init__(self, client: C) -> None:
        self._client = client
        self._lock = threading.Lock()

    def current(self) -> C:
        return self._client

    def swap(self, new: C) -> C:
        """Install `new`; return the previous client (close it, it waits for its calls)."""
        with self._lock:
            old, self._client = self._client, new
        return old


class GithubPort(Protocol):
    def list_milestones(self, repository: str) -> list[dict[str, Any]]: ...

    def create_milestone(
        self, repository: str, title: str, description: str, due_on: str | None
    ) -> dict[str, Any]: ...

    def list_issues(
        self, repository: str, milestone: int | None = None
    ) -> list[dict[str, Any]]: ...

    def create_issue(
        self, repository: str, title: str, body: str, milestone: int | None
    ) -> dict[str, Any]: ...


class JiraPort(Protocol):
    def issue_types(self, project: str) -> list[str]: ...

    def find_issues(
        self, project: str, summary: str, issue_type: str | None = None
    ) -> list[dict[str, Any]]: ...

    def create_issue(
        self,
        project: str,
        summary: str,
        description: str,
        issue_type: str = "Task",
        labels: tuple[str, ...] = (),
    ) -> dict[str, Any]: ...


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
        raise InvalidMessage("data.target", f"must be github or jira, got {target!r}")
    return str(target)


def _destination(data: Mapping[str, Any], target: str) -> str:
    if target == "github":
        repository = data.get("repository")
        if not isinstance(repository, str) or not _REPOSITORY.match(repository):
            raise InvalidMessage("data.repository", f"must be owner/name, got {repository!r}")
        return repository
    project = data.get("project")
    if project is None:
        raise InvalidMessage(
            "data.project", "is required for target jira (a project key like PROJ)"
        )
    if not isinstance(project, str) or not _PROJECT.match(project):
        raise InvalidMessage(
            "data.project", f"must be a Jira project key like PROJ, got {project!r}"
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
    for i, milestone in enumerate(milestones):
        where = f"data.plan.milestones[{i}]"
        _check_titled(milestone, where)
        if milestone.get("due_date") is not None:
            try:
                date.fromisoformat(str(milestone["due_date"]))
            except ValueError:
                raise InvalidMessage(f"{where}.due_date", "must be a date YYYY-MM-DD") from None
        tasks = milestone.get("tasks", [])
        if not isinstance(tasks, list):
            raise InvalidMessage(f"{where}.tasks", "must be a list")
        for j, task in enumerate(tasks):
            _check_titled(task, f"{where}.tasks[{j}]")


def _check_titled(item: Any, where: str) -> None:
    if not isinstance(item, Mapping):
        raise InvalidMessage(where, "must be an object")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InvalidMessage(f"{where}.title", "must be a non-empty string")


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
