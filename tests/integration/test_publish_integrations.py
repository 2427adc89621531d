"""publish_plan with the real GitHub and Jira clients over loopback HTTP against local fakes."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.domain.config.model import GithubSettings, JiraSettings
from mira.domain.messages import InvalidMessage
from mira.plans.github import GithubClient
from mira.plans.handlers import plan_handler
from mira.plans.integrations import ClientHolder
from mira.plans.jira import JiraClient
from mira.plans.ports import IntegrationError
from mira.plans.publish import publish_plan
from tests.integration.fake_github import FakeGithub
from tests.integration.fake_jira import FakeJira, basic
from tests.support import wait_until

pytestmark = pytest.mark.integration

OLD, NEW = "ghp_old_token_1111", "ghp_new_token_2222"
JIRA_TOKEN = "jira_api_token_3333"

PLAN: dict[str, Any] = {
    "name": "Launch",
    "start_date": "2026-01-05",
    "milestones": [
        {
            "id": "m1",
            "title": "Ship MVP",
            "goal": "Ship MVP",
            "week": 4,
            "due_date": "2026-02-02",
            "tasks": [
                {"id": "m1-t1", "title": "Plan: Ship MVP", "description": "Scope it", "week": 1},
                {"id": "m1-t2", "title": "Build: Ship MVP", "description": "Code it", "week": 2},
            ],
        },
        {
            "id": "m2",
            "title": "Beta",
            "goal": "Beta",
            "week": 8,
            "due_date": "2026-03-02",
            "tasks": [{"id": "m2-t1", "title": "Invite testers", "week": 6}],
        },
    ],
}


def _no_plan(_: Any) -> dict[str, Any]:
    raise AssertionError("a full plan needs no generation")


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub({OLD, NEW}) as server:
        yield server


@pytest.fixture
def jira() -> Iterator[FakeJira]:
    with FakeJira({basic("bot@example.com", JIRA_TOKEN)}) as server:
        yield server


def _gh_client(server: FakeGithub, token: str = OLD) -> GithubClient:
    return GithubClient(GithubSettings(enabled=True, base_url=server.base_url, timeout=5), token)


def _publish_gh(holder: ClientHolder[GithubClient], plan: dict[str, Any] = PLAN) -> Any:
    message = {"target": "github", "repository": "acme/app", "plan": plan}
    return publish_plan(message, github=holder, jira=None, make_plan=_no_plan)


def _publish_jira(client: JiraClient, project: str = "MIRA") -> Any:
    message = {"target": "jira", "project": project, "plan": PLAN}
    return publish_plan(message, github=None, jira=ClientHolder(client), make_plan=_no_plan)


def test_github_publish_makes_exactly_the_expected_calls(github: FakeGithub) -> None:
    result = _publish_gh(ClientHolder(_gh_client(github)))
    assert result["created"]["issues"] == ["Plan: Ship MVP", "Build: Ship MVP", "Invite testers"]
    prefix = "/api/v3/repos/acme/app"
    assert [(c.method, c.path, c.status) for c in github.calls] == [
        ("GET", f"{prefix}/milestones", 200),
        ("POST", f"{prefix}/milestones", 201),
        ("POST", f"{prefix}/milestones", 201),
        ("GET", f"{prefix}/issues", 200),
        ("POST", f"{prefix}/issues", 201),
        ("POST", f"{prefix}/issues", 201),
        ("POST", f"{prefix}/issues", 201),
    ]
    first = github.calls[0]
    assert first.query == {"state": "all", "per_page": "100"}
    assert first.headers["Authorization"] == f"Bearer {OLD}"
    assert first.headers["Accept"] == "application/vnd.github+json"
    assert first.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert github.calls[1].body["due_on"] == "2026-02-02T00:00:00Z"
    assert [i["milestone"]["title"] for i in github.issues["acme/app"]] == [
        "Ship MVP",
        "Ship MVP",
        "Beta",
    ]


def test_second_github_publish_creates_nothing(github: FakeGithub) -> None:
    holder = ClientHolder(_gh_client(github))
    _publish_gh(holder)
    github.calls.clear()
    result = _publish_gh(holder)
    assert result["created"] == {"milestones": [], "issues": []}
    assert result["existing"]["milestones"] == ["Ship MVP", "Beta"]
    assert {c.method for c in github.calls} == {"GET"}
    assert len(github.issues["acme/app"]) == 3


def test_existing_issues_are_found_across_pages_and_pull_requests_ignored(
    github: FakeGithub,
) -> None:
    for n in range(150):
        github.seed_issue("acme/app", f"Old issue {n}")
    github.seed_issue("acme/app", "Invite testers")  # on page 2
    github.seed_issue("acme/app", "Plan: Ship MVP", pull_request=True)
    result = _publish_gh(ClientHolder(_gh_client(github)))
    assert result["existing"]["issues"] == ["Invite testers"]
    assert result["created"]["issues"] == ["Plan: Ship MVP", "Build: Ship MVP"]
    assert [c.query.get("page") for c in github.calls_matching("GET", "/issues$")] == [None, "2"]


def test_generate_plan_input_is_generated_then_published(github: FakeGithub) -> None:
    make_plan = plan_handler(lambda: dt.date(2026, 1, 5))
    goals = {"name": "Launch", "goals": ["Ship MVP", "Beta"], "duration_weeks": 12}
    message = {"target": "github", "repository": "acme/app", "plan": goals}
    holder = ClientHolder(_gh_client(github))
    result = publish_plan(message, github=holder, jira=None, make_plan=make_plan)
    assert result["created"]["milestones"] == ["Ship MVP", "Beta"]
    assert "Review: Beta" in result["created"]["issues"]
    again = publish_plan(message, github=holder, jira=None, make_plan=make_plan)
    assert again["created"] == {"milestones": [], "issues": []}
    bad = {**message, "plan": {"name": "Launch", "goals": []}}
    with pytest.raises(InvalidMessage, match=r"^data\.plan\.goals: "):
        publish_plan(bad, github=holder, jira=None, make_plan=make_plan)


def test_a_503_is_retried_and_the_publish_succeeds(github: FakeGithub) -> None:
    github.fail_next(1, 503)
    result = _publish_gh(ClientHolder(_gh_client(github)))
    assert len(result["created"]["issues"]) == 3
    assert [c.status for c in github.calls[:2]] == [503, 200]
    assert github.calls[0].path == github.calls[1].path


def test_retry_after_from_a_429_is_honoured(github: FakeGithub) -> None:
    github.fail_next(1, 429, retry_after="1")
    _publish_gh(ClientHolder(_gh_client(github)))
    limited, retried = github.calls[0], github.calls[1]
    assert (limited.status, retried.status) == (429, 200)
    assert 0.95 <= retried.at - limited.at < 10.0  # honoured Retry-After: 1, capped wait


def test_a_rejected_token_gives_a_clear_error_without_the_token(github: FakeGithub) -> None:
    bad = "ghp_revoked_token_9999"
    with capture_logs() as logs, pytest.raises(IntegrationError) as caught:
        _gh_client(github, bad).check()
    assert (caught.value.upstream_status, caught.value.status) == (401, 502)
    assert "credentials rejected" in str(caught.value) and "Bad credentials" in str(caught.value)
    assert bad not in str(caught.value) and bad not in repr(caught.value)
    assert bad not in repr(logs)
    assert len(github.calls) == 1  # a 401 is not retried
    assert _gh_client(github, NEW).check().startswith("github ok: authenticated as mira-bot")


def test_a_post_is_not_repeated_after_an_ambiguous_502_but_is_after_a_503(
    github: FakeGithub,
) -> None:
    client = _gh_client(github)
    github.fail_next(1, 502)
    with pytest.raises(IntegrationError, match=r"HTTP 502"):
        client.create_milestone("acme/app", "Once", "", None)
    assert [(c.method, c.status) for c in github.calls] == [("POST", 502)]
    github.fail_next(1, 503, retry_after="0")
    client.create_milestone("acme/app", "Twice", "", None)
    assert [(c.method, c.status) for c in github.calls[1:]] == [("POST", 503), ("POST", 201)]
    assert [m["title"] for m in github.milestones["acme/app"]] == ["Twice"]


def test_githubs_rate_limit_403_is_waited_out_until_the_reset(github: FakeGithub) -> None:
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 2)}
    github.fail_next(1, 403, headers=reset)
    assert _gh_client(github).check().startswith("github ok")
    limited, retried = github.calls
    assert (limited.status, retried.status) == (403, 200)
    assert 0.5 <= retried.at - limited.at < 10.0  # waited for X-RateLimit-Reset (whole seconds)


def test_an_ordinary_403_is_answered_at_once(github: FakeGithub) -> None:
    github.fail_next(1, 403)
    with pytest.raises(IntegrationError, match=r"HTTP 403"):
        _gh_client(github).check()
    assert len(github.calls) == 1


def test_an_unreachable_server_gives_up_after_the_retries_with_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    settings = GithubSettings(enabled=True, base_url=f"http://127.0.0.1:{port}", max_retries=2)
    client = GithubClient(settings, OLD)
    with capture_logs() as logs, pytest.raises(IntegrationError) as caught:
        _publish_gh(ClientHolder(client))
    assert str(caught.value) == f"github: ConnectionError talking to http://127.0.0.1:{port}"
    retries = [e for e in logs if e["event"] == "integration_retry"]
    assert [(e["attempt"], e["status"]) for e in retries] == [(1, None), (2, None)]


def test_jira_cloud_publish_creates_epics_and_tasks_once(jira: FakeJira) -> None:
    settings = JiraSettings(enabled=True, url=jira.url, timeout=5)
    client = JiraClient(settings, "bot@example.com", JIRA_TOKEN)
    assert client.check() == f"jira ok: authenticated as bot@example.com at {jira.url}"
    first = _publish_jira(client)
    assert first["created"] == {
        "milestones": ["Ship MVP", "Beta"],
        "issues": ["Plan: Ship MVP", "Build: Ship MVP", "Invite testers"],
    }
    created = [c.body["fields"] for c in jira.calls_matching("POST", "/issue$")]
    assert [(f["issuetype"]["name"], f["summary"]) for f in created][:2] == [
        ("Epic", "Ship MVP"),
        ("Task", "Plan: Ship MVP"),
    ]
    assert created[1]["labels"] == ["mira-m1", "mira"]
    assert created[1]["project"] == {"key": "MIRA"}
    searches = jira.calls_matching("GET", "/search/jql$")
    assert searches[0].query["jql"] == 'project = "MIRA" AND summary ~ "Ship MVP"'
    jira.calls.clear()
    second = _publish_jira(client)
    assert second["created"] == {"milestones": [], "issues": []}
    assert len(second["existing"]["issues"]) == 3
    assert not jira.calls_matching("POST", ".")


def test_jira_server_with_a_personal_access_token_falls_back_to_legacy_search() -> None:
    pat = "jira_server_pat_4444"
    with FakeJira({f"Bearer {pat}"}, {"OPS": ("Task", "Bug")}, cloud=False) as server:
        server.seed("OPS", "Plan: Ship MVP")
        client = JiraClient(JiraSettings(enabled=True, url=server.url, timeout=5), None, pat)
        result = _publish_jira(client, "OPS")
        assert result["existing"]["issues"] == ["Plan: Ship MVP"]
        assert result["created"] == {
            "milestones": [],
            "issues": ["Build: Ship MVP", "Invite testers"],
        }
        assert len(server.calls_matching("GET", "/search/jql$")) == 1  # probed once, then legacy
        assert server.calls_matching("GET", "/search$")


def test_swapping_tokens_mid_stream_loses_no_call(github: FakeGithub) -> None:
    holder = ClientHolder(_gh_client(github, OLD))
    failures: list[BaseException] = []
    stop = threading.Event()
    published = [0]

    def publish_loop() -> None:
        deadline = time.monotonic() + 20
        for i in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            plan = {"milestones": [{"title": f"Run {i}", "tasks": [{"title": f"Task {i}"}]}]}
            try:
                _publish_gh(holder, plan)
            except Exception as exc:
                failures.append(exc)
            published[0] += 1

    worker = threading.Thread(target=publish_loop)
    worker.start()
    new_auth = f"Bearer {NEW}"
    try:
        wait_until(lambda: published[0] >= 10, timeout=10)
        holder.swap(_gh_client(github, NEW)).close()
        wait_until(lambda: any(c.headers["Authorization"] == new_auth for c in github.calls), 5)
        github.set_tokens({NEW})  # the old token is revoked once the new one is in use
        after_revoke = published[0]
        wait_until(lambda: published[0] >= after_revoke + 10, timeout=10)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive() and failures == []
    auths = [c.headers["Authorization"] for c in github.calls]
    switch = auths.index(new_auth)
    assert set(auths[:switch]) == {f"Bearer {OLD}"} and set(auths[switch:]) == {new_auth}
    assert switch >= 40 and len(auths) - switch >= 40  # >= 10 publishes of 4 calls each side
    assert all(c.status < 400 for c in github.calls)
    assert len(github.issues["acme/app"]) == published[0]
