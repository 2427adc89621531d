"""publish_plan validation and idempotency with hand-written fakes; retry policy without sleeps."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from mira.adapters.github_integration import GithubClient, github_client_from_settings
from mira.adapters.http_retry import Caller, IntegrationError, RetryPolicy, parse_retry_after
from mira.adapters.jira_integration import jira_client_from_settings
from mira.domain.config.model import GithubSettings, JiraSettings
from mira.service_layer.publish import (
    ClientHolder,
    IntegrationUnavailable,
    InvalidMessage,
    publish_plan,
)

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
        github_client_from_settings(GithubSettings(enabled=True), None)
    assert "integrations.github.token is not set" in caught.value.reason
    message = {"target": "github", "repository": "a/b", "plan": PLAN}
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.github\.token"):
        publish_plan(message, github=caught.value, jira=None, make_plan=_no_plan)
    with pytest.raises(IntegrationUnavailable, match=r"integrations\.jira\.url is not set"):
        jira_client_from_settings(JiraSettings(enabled=True), "u", "t")


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


# --- retry policy ----------------------------------------------------------------------------


def _response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = json.dumps(body if body is not None else {}).encode()
    return response


class ScriptedSession(requests.Session):
    """Answers each request with the next scripted response (or raises it)."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__()
        self.script = script
        self.sent: list[tuple[str, str]] = []
        self.closed = False
        self.during: list[Any] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.sent.append((method, url))
        step = self.script.pop(0)
        if callable(step):
            step = step()
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> None:
        self.closed = True


def _caller(script: list[Any], retries: int = 3) -> tuple[Caller, ScriptedSession, list[float]]:
    slept: list[float] = []
    session = ScriptedSession(script)
    policy = RetryPolicy(max_retries=retries, rand=lambda: 0.5)
    caller = Caller("github", session, policy, 5.0, {}, (TOKEN,), sleep=slept.append)
    caller.clock = lambda: 1_000_000.0
    return caller, session, slept


def test_server_errors_are_retried_with_exponential_backoff() -> None:
    script = [_response(503), _response(500), _response(502), _response(200, {"ok": 1})]
    caller, session, slept = _caller(script)
    assert caller.request("GET", "http://127.0.0.1/x").json() == {"ok": 1}
    assert slept == pytest.approx([0.25, 0.45, 0.85])
    assert len(session.sent) == 4


def test_retry_after_seconds_and_http_date_are_honoured_and_capped() -> None:
    date = formatdate(1_000_000.0 + 12, usegmt=True)
    script = [
        _response(429, headers={"Retry-After": "3"}),
        _response(503, headers={"Retry-After": date}),
        _response(429, headers={"Retry-After": "3600"}),
        _response(200),
    ]
    caller, _, slept = _caller(script)
    caller.request("GET", "http://127.0.0.1/x")
    assert slept == pytest.approx([3.0, 12.0, 30.0])


def test_backoff_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(rand=lambda: 1.0)
    assert [policy.backoff(n) for n in (0, 4, 10)] == pytest.approx([0.3, 3.3, 5.0])
    assert parse_retry_after("soon", 0.0) is None


def test_client_errors_fail_at_once_without_the_token() -> None:
    body = {"message": f"Bad credentials for {TOKEN}"}
    caller, session, slept = _caller([_response(401, body)])
    with pytest.raises(IntegrationError) as caught:
        caller.request("GET", "http://127.0.0.1/user")
    assert caught.value.upstream_status == 401 and slept == [] and len(session.sent) == 1
    assert TOKEN not in str(caught.value)
    assert "credentials rejected" in str(caught.value)


def test_gives_up_after_max_retries() -> None:
    script = [requests.ConnectionError("refused")] * 3
    caller, session, slept = _caller(script, retries=2)
    with pytest.raises(IntegrationError, match=r"ConnectionError talking to http://127\.0\.0\.1"):
        caller.request("GET", "http://127.0.0.1/x")
    assert len(session.sent) == 3 and len(slept) == 2


def test_post_is_not_repeated_after_an_ambiguous_failure() -> None:
    caller, session, _ = _caller([_response(502), _response(201)])
    with pytest.raises(IntegrationError):
        caller.request("POST", "http://127.0.0.1/issues")
    assert len(session.sent) == 1
    caller, session, _ = _caller([_response(503), _response(201)])
    assert caller.request("POST", "http://127.0.0.1/issues").status_code == 201


def test_post_is_repeated_when_the_connection_was_never_made() -> None:
    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "no")))  # type: ignore[arg-type]
    caller, session, _ = _caller([refused, _response(201)])
    assert caller.request("POST", "http://127.0.0.1/issues").status_code == 201
    caller, session, _ = _caller([requests.ConnectionError("reset by peer"), _response(201)])
    with pytest.raises(IntegrationError, match="ConnectionError"):
        caller.request("POST", "http://127.0.0.1/issues")
    assert len(session.sent) == 1


def test_github_rate_limit_403_is_waited_out() -> None:
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(1_000_000 + 4)}
    caller, _, slept = _caller([_response(403, {"message": "rate limit"}, reset), _response(200)])
    caller.request("GET", "http://127.0.0.1/x")
    assert slept == [4.0]


def test_close_waits_for_the_call_in_flight() -> None:
    holder: list[Caller] = []

    def close_mid_call() -> Any:
        holder[0].close()  # what a credential swap does while this call is running
        assert not session.closed
        return _response(200)

    caller, session, _ = _caller([close_mid_call])
    holder.append(caller)
    caller.request("GET", "http://127.0.0.1/x")
    assert session.closed


def test_client_repr_and_errors_hide_the_token() -> None:
    client = GithubClient(GithubSettings(enabled=True, base_url="http://127.0.0.1:9"), TOKEN)
    assert TOKEN not in repr(client)
