"""publish_plan validation, bounds and idempotency with hand-written fakes; the retry rules on
urllib3's Retry and the caller's errors, without sleeps or network."""

from __future__ import annotations

from typing import Any

import pytest

from mira.domain.config.model import GithubSettings, JiraSettings
from mira.domain.messages import InvalidMessage
from mira.plans.github import GithubClient
from mira.plans.integrations import ClientHolder
from mira.plans.jira import JiraClient
from mira.plans.ports import IntegrationError, IntegrationUnavailable
from mira.plans.publish import publish_plan
from mira.plans.validation import MAX_MILESTONES, MAX_TITLE, MAX_WRITES

TOKEN = "ghp_unit_secret_token_value"

PLAN: dict[str, Any] = {
    "name": "Launch",
    "milestones": [
        {
            "id": "m1",
            "title": "Ship MVP",
            "goal": "Ship MVP",
            "week": 4,
            "due_date": "2026-02-02",
            "tasks": [
                {"id": "m1-t1", "title": "Plan: Ship MVP", "description": "scope", "week": 1},
                {"id": "m1-t2", "title": "Build: Ship MVP", "description": "code", "week": 2},
            ],
        },
        {
            "id": "m2",
            "title": "Beta",
            "due_date": "2026-03-02",
            "tasks": [{"id": "m2-t1", "title": "Invite testers", "week": 6}],
        },
    ],
}


class FakeGithub:
    """In-memory GitHub repository recording every call; can fail the Nth issue creation."""

    def __init__(self, fail_issue_number: int | None = None) -> None:
        self.milestones: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.fail_issue_number = fail_issue_number

    def list_milestones(self, repository: str) -> list[dict[str, Any]]:
        self.calls.append(("list_milestones", repository))
        return list(self.milestones)

    def create_milestone(
        self, repository: str, title: str, description: str, due_on: str | None
    ) -> dict[str, Any]:
        self.calls.append(("create_milestone", title))
        made = {"number": len(self.milestones) + 1, "title": title, "due_on": due_on}
        self.milestones.append(made)
        return made

    def list_issues(self, repository: str, milestone: int | None = None) -> list[dict[str, Any]]:
        self.calls.append(("list_issues", repository))
        return list(self.issues)

    def create_issue(
        self, repository: str, title: str, body: str, milestone: int | None
    ) -> dict[str, Any]:
        self.calls.append(("create_issue", title))
        if self.fail_issue_number == len(self.issues) + 1:
            self.fail_issue_number = None
            raise IntegrationError("github", 502, "Bad Gateway")
        made = {"number": 100 + len(self.issues), "title": title, "milestone": milestone}
        self.issues.append(made)
        return made


class FakeJira:
    """In-memory Jira project recording every call."""

    def __init__(self, types: tuple[str, ...] = ("Task", "Epic")) -> None:
        self.types = types
        self.issues: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []

    def issue_types(self, project: str) -> list[str]:
        return list(self.types)

    def find_issues(
        self, project: str, summary: str, issue_type: str | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append(("find_issues", summary))
        return [i for i in self.issues if i["summary"] == summary and i["type"] == issue_type]

    def create_issue(
        self,
        project: str,
        summary: str,
        description: str,
        issue_type: str = "Task",
        labels: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        self.calls.append(("create_issue", summary))
        made = {"key": f"{project}-{len(self.issues) + 1}", "summary": summary}
        self.issues.append({**made, "type": issue_type, "labels": labels})
        return made


def _no_plan(_: Any) -> dict[str, Any]:
    raise AssertionError("make_plan must not be called for a full plan")


def _publish_github(fake: FakeGithub, **data: Any) -> dict[str, Any]:
    message = {"target": "github", "repository": "acme/app", "plan": PLAN, **data}
    return publish_plan(message, github=ClientHolder(fake), jira=None, make_plan=_no_plan)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"repository": "a/b", "plan": PLAN}, "target"),
        ({"target": "gitlab", "repository": "a/b", "plan": PLAN}, "target"),
        ({"target": "github", "repository": "no-slash", "plan": PLAN}, "repository"),
        ({"target": "github", "plan": PLAN}, "repository"),
        ({"target": "jira", "plan": PLAN}, "project"),
        ({"target": "jira", "project": "bad key!", "plan": PLAN}, "project"),
        ({"target": "github", "repository": "a/b"}, "plan"),
        ({"target": "github", "repository": "a/b", "plan": "x"}, "plan"),
        ({"target": "github", "repository": "a/b", "plan": {"milestones": "x"}}, "plan.milestones"),
        (
            {"target": "github", "repository": "a/b", "plan": {"milestones": [{"goal": "g"}]}},
            "plan.milestones[0].title",
        ),
        (
            {
                "target": "github",
                "repository": "a/b",
                "plan": {"milestones": [{"title": "M", "due_date": "next week"}]},
            },
            "plan.milestones[0].due_date",
        ),
        (
            {
                "target": "github",
                "repository": "a/b",
                "plan": {"milestones": [{"title": "M", "tasks": [{"title": ""}]}]},
            },
            "plan.milestones[0].tasks[0].title",
        ),
    ],
)
def test_invalid_message_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        publish_plan(data, github=ClientHolder(FakeGithub()), jira=None, make_plan=_no_plan)
    assert caught.value.field == f"data.{field}"
    assert str(caught.value).startswith(f"data.{field}: ")


def test_disabled_integration_is_reported_as_unavailable() -> None:
    message = {"target": "jira", "project": "MIRA", "plan": PLAN}
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.jira\.enabled is false"):
        publish_plan(message, github=None, jira=None, make_plan=_no_plan)


def test_missing_token_names_the_setting() -> None:
    with pytest.raises(IntegrationUnavailable) as caught:
        GithubClient(GithubSettings(enabled=True), None)
    assert "integrations.github.token is not set" in caught.value.reason
    assert caught.value.field == "integrations.github.token"
    message = {"target": "github", "repository": "a/b", "plan": PLAN}
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.github\.token"):
        publish_plan(message, github=caught.value, jira=None, make_plan=_no_plan)
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.jira\.url is not set"):
        JiraClient(JiraSettings(enabled=True), "u", "t")
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.jira\.url must be an http"):
        JiraClient(JiraSettings(enabled=True, url="ftp://jira.example"), "u", "t")
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.jira\.api_token is not set"):
        JiraClient(JiraSettings(enabled=True, url="http://127.0.0.1:9"), "u", None)


def _milestones(count: int, tasks: int = 0) -> list[dict[str, Any]]:
    return [
        {"title": f"M{i}", "tasks": [{"title": f"T{i}.{j}"} for j in range(tasks)]}
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        ({"milestones": _milestones(MAX_MILESTONES + 1)}, "data.plan.milestones"),
        ({"milestones": _milestones(40, tasks=5)}, "data.plan"),  # 240 writes
        ({"milestones": [{"title": "x" * (MAX_TITLE + 1)}]}, "data.plan.milestones[0].title"),
        ({"milestones": [{"title": "M", "goal": "g" * 2001}]}, "data.plan.milestones[0].goal"),
        (
            {"milestones": [{"title": "M", "tasks": [{"title": "T", "description": ["x"]}]}]},
            "data.plan.milestones[0].tasks[0].description",
        ),
        (
            {"milestones": [{"title": "M", "tasks": [{"title": "T", "week": "soon"}]}]},
            "data.plan.milestones[0].tasks[0].week",
        ),
    ],
)
def test_a_plan_over_the_bounds_is_refused_before_any_upstream_call(
    plan: dict[str, Any], field: str
) -> None:
    fake = FakeGithub()
    with pytest.raises(InvalidMessage) as caught:
        _publish_github(fake, plan=plan)
    assert caught.value.field == field
    assert fake.calls == []


def test_a_plan_at_the_bounds_makes_at_most_max_writes() -> None:
    fake = FakeGithub()
    per = MAX_WRITES // MAX_MILESTONES - 1
    result = _publish_github(fake, plan={"milestones": _milestones(MAX_MILESTONES, per)})
    writes = [c for c in fake.calls if c[0].startswith("create")]
    assert len(writes) == MAX_WRITES == len(result["created"]["issues"]) + MAX_MILESTONES


def test_an_error_quotes_only_a_short_prefix_of_a_bad_value() -> None:
    message = {"target": "github", "repository": "x" * 100_000, "plan": PLAN}
    with pytest.raises(InvalidMessage) as caught:
        publish_plan(message, github=ClientHolder(FakeGithub()), jira=None, make_plan=_no_plan)
    assert len(str(caught.value)) < 120


def test_generate_plan_errors_name_the_field_inside_plan() -> None:
    def make_plan(_: Any) -> dict[str, Any]:
        raise InvalidMessage("data.goals", "must contain at least one goal")

    message = {"target": "github", "repository": "acme/app", "plan": {"goals": []}}
    with pytest.raises(InvalidMessage) as caught:
        publish_plan(message, github=ClientHolder(FakeGithub()), jira=None, make_plan=make_plan)
    assert caught.value.field == "data.plan.goals"


def test_generate_plan_input_is_expanded_with_make_plan() -> None:
    seen: list[Any] = []

    def make_plan(goal_input: Any) -> dict[str, Any]:
        seen.append(dict(goal_input))
        return PLAN

    message = {"target": "github", "repository": "acme/app", "plan": {"goals": ["Ship MVP"]}}
    result = publish_plan(
        message, github=ClientHolder(FakeGithub()), jira=None, make_plan=make_plan
    )
    assert seen == [{"goals": ["Ship MVP"]}]
    assert result["created"]["milestones"] == ["Ship MVP", "Beta"]


def test_first_publish_creates_everything_with_milestone_links() -> None:
    fake = FakeGithub()
    result = _publish_github(fake)
    assert result == {
        "target": "github",
        "repository": "acme/app",
        "created": {
            "milestones": ["Ship MVP", "Beta"],
            "issues": ["Plan: Ship MVP", "Build: Ship MVP", "Invite testers"],
        },
        "existing": {"milestones": [], "issues": []},
    }
    assert fake.milestones[0]["due_on"] == "2026-02-02T00:00:00Z"
    assert [i["milestone"] for i in fake.issues] == [1, 1, 2]


def test_second_publish_creates_nothing_and_reports_existing() -> None:
    fake = FakeGithub()
    _publish_github(fake)
    fake.calls.clear()
    result = _publish_github(fake)
    assert result["created"] == {"milestones": [], "issues": []}
    assert result["existing"]["issues"] == ["Plan: Ship MVP", "Build: Ship MVP", "Invite testers"]
    assert [c[0] for c in fake.calls] == ["list_milestones", "list_issues"]


def test_retry_after_partial_failure_completes_without_duplicates() -> None:
    fake = FakeGithub(fail_issue_number=2)
    with pytest.raises(IntegrationError):
        _publish_github(fake)
    result = _publish_github(fake)
    assert result["existing"] == {"milestones": ["Ship MVP", "Beta"], "issues": ["Plan: Ship MVP"]}
    assert result["created"]["issues"] == ["Build: Ship MVP", "Invite testers"]
    titles = [i["title"] for i in fake.issues]
    assert sorted(titles) == sorted(set(titles)) and len(titles) == 3


def test_jira_publish_creates_epics_and_labelled_tasks_once() -> None:
    fake = FakeJira()
    message = {"target": "jira", "project": "mira", "plan": PLAN}
    first = publish_plan(message, github=None, jira=ClientHolder(fake), make_plan=_no_plan)
    second = publish_plan(message, github=None, jira=ClientHolder(fake), make_plan=_no_plan)
    assert first["project"] == "MIRA"
    assert first["created"]["milestones"] == ["Ship MVP", "Beta"]
    assert second["created"] == {"milestones": [], "issues": []}
    assert len(fake.issues) == 5
    assert fake.issues[1]["labels"] == ("mira-m1", "mira")


def test_jira_project_without_epics_uses_labels_only() -> None:
    fake = FakeJira(types=("Task", "Bug"))
    message = {"target": "jira", "project": "OPS", "plan": PLAN}
    result = publish_plan(message, github=None, jira=ClientHolder(fake), make_plan=_no_plan)
    assert result["created"]["milestones"] == []
    assert {i["type"] for i in fake.issues} == {"Task"}
    assert fake.issues[2]["labels"] == ("mira-m2", "mira")


def test_client_holder_swap_returns_the_old_client() -> None:
    first, second = FakeGithub(), FakeGithub()
    holder = ClientHolder(first)
    assert holder.swap(second) is first
    assert holder.current() is second
