"""publish_plan through the running service (a subprocess) against local GitHub and Jira fakes
(no internet here), hot reload of the integrations section, and live token rotation in a real
OpenBao server while publishes run."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fake_github import FakeGithub
from tests.integration.fake_jira import FakeJira, basic
from tests.integration.integrations_support import (
    JIRA_USER,
    Service,
    plan_input,
    publish,
    running,
    vault_token,
)
from tests.integration.openbao_server import VaultServer, openbao
from tests.support import wait_until

__all__ = ["openbao"]  # the fixture is used by name

pytestmark = pytest.mark.integration

GH_TOKEN = "ghp_e2e_service_token_5150"
JIRA_TOKEN = "jira_e2e_service_token_7070"
OLD, NEW = "ghp_rotation_old_token_1111", "ghp_rotation_new_token_2222"
SECRETS = [GH_TOKEN, JIRA_TOKEN, OLD, NEW]
LAUNCH = plan_input("Launch", ["MVP", "Beta"])
TITLES = ["Plan: MVP", "Build: MVP", "Review: MVP", "Plan: Beta", "Build: Beta", "Review: Beta"]


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGithub]:
    with FakeGithub({GH_TOKEN}, repositories=("acme/app", "acme/retry")) as server:
        yield server


@pytest.fixture(scope="module")
def jira() -> Iterator[FakeJira]:
    with FakeJira({basic(JIRA_USER, JIRA_TOKEN)}) as server:
        yield server


@pytest.fixture(scope="module")
def service(
    github: FakeGithub, jira: FakeJira, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """GitHub enabled by MIRA_GITHUB_ENABLED with GITHUB_TOKEN, Jira by the file (as the guide)."""
    config = {
        "integrations": {
            "github": {"base_url": github.base_url, "timeout": 5},
            "jira": {"enabled": True, "url": jira.url, "username": JIRA_USER, "timeout": 5},
        }
    }
    env = {"MIRA_GITHUB_ENABLED": "true", "GITHUB_TOKEN": GH_TOKEN, "JIRA_API_TOKEN": JIRA_TOKEN}
    with running(tmp_path_factory.mktemp("integrations"), config, env) as svc:
        yield svc


def _posts(server: FakeGithub | FakeJira) -> int:
    return sum(1 for c in server.calls if c.method == "POST")


def test_github_publish_creates_milestones_and_issues_and_a_rerun_duplicates_nothing(
    service: Service, github: FakeGithub
) -> None:
    status, body = service.post(publish("github", "acme/app", LAUNCH))
    assert status == 200, body
    assert body["data"]["created"] == {"milestones": ["MVP", "Beta"], "issues": TITLES}
    assert [m["title"] for m in github.milestones["acme/app"]] == ["MVP", "Beta"]
    by_title = {i["title"]: i["milestone"]["title"] for i in github.issues["acme/app"]}
    assert by_title == {t: t.split(": ")[1] for t in TITLES}
    posts = _posts(github)

    status, body = service.post(publish("github", "acme/app", LAUNCH))
    assert status == 200, body
    assert body["data"]["created"] == {"milestones": [], "issues": []}
    assert body["data"]["existing"] == {"milestones": ["MVP", "Beta"], "issues": TITLES}
    assert _posts(github) == posts and len(github.issues["acme/app"]) == 6


def test_jira_publish_creates_epics_and_tasks_and_a_rerun_duplicates_nothing(
    service: Service, jira: FakeJira
) -> None:
    status, body = service.post(publish("jira", "MIRA", LAUNCH))
    assert status == 200, body
    assert body["data"]["created"] == {"milestones": ["MVP", "Beta"], "issues": TITLES}
    kinds = {i["summary"]: i["issuetype"]["name"] for i in jira.issues}
    assert kinds == {"MVP": "Epic", "Beta": "Epic", **dict.fromkeys(TITLES, "Task")}
    assert all("mira" in i["labels"] for i in jira.issues)
    assert jira.calls[0].headers["Authorization"] == basic(JIRA_USER, JIRA_TOKEN)

    status, body = service.post(publish("jira", "mira", LAUNCH))
    assert status == 200, body
    assert body["data"]["created"] == {"milestones": [], "issues": []}
    assert body["data"]["existing"]["issues"] == TITLES and len(jira.issues) == 8


def test_a_503_then_200_is_retried_and_the_publish_succeeds(
    service: Service, github: FakeGithub
) -> None:
    before = len(github.calls)
    github.fail_next(1, 503, retry_after="0")
    status, body = service.post(publish("github", "acme/retry", plan_input("R", ["Retry"])))
    assert status == 200, body
    assert len(body["data"]["created"]["issues"]) == 3
    first, second = github.calls[before : before + 2]
    assert (first.method, first.status) == ("GET", 503)
    assert (second.method, second.path, second.status) == ("GET", first.path, 200)
    retries = service.logged("integration_retry")
    assert retries and retries[-1]["status"] == 503 and retries[-1]["integration"] == "github"


def test_rejected_credentials_answer_502_and_ready_shows_the_error_until_a_call_succeeds(
    service: Service, github: FakeGithub
) -> None:
    github.set_tokens({"ghp_someone_else"})
    try:
        status, body = service.post(publish("github", "acme/app", LAUNCH))
    finally:
        github.set_tokens({GH_TOKEN})
    assert status == 502
    assert "credentials rejected" in body["error"] and "HTTP 401" in body["error"]
    assert "/repos/" not in body["error"] and "127.0.0.1" not in body["error"]  # no upstream detail
    (logged,) = service.logged("Message failed")
    assert "/repos/acme/app" in logged["error"]  # the detail stays in the log
    entry = service.ready()["integrations"]["github"]
    assert entry["configured"] is True and entry["last_call"] == "error"
    assert "credentials rejected" in entry["last_error"]

    assert service.post(publish("github", "acme/app", LAUNCH))[0] == 200
    entry = service.ready()["integrations"]["github"]
    assert entry["last_call"] == "ok" and "last_error" not in entry


def test_ready_lists_each_enabled_integration_and_metrics_count_calls(service: Service) -> None:
    assert service.post(publish("jira", "MIRA", LAUNCH))[0] == 200
    integrations = service.ready()["integrations"]
    assert set(integrations) == {"github", "jira"}
    assert integrations["jira"]["configured"] is True
    assert integrations["jira"]["last_call"] == "ok"
    text = service.metrics()
    for name in ("github", "jira"):
        ok = re.search(
            rf'mira_integration_requests_total{{integration="{name}",result="ok"}} (\S+)', text
        )
        assert ok and float(ok[1]) > 0
        count = re.search(
            rf'mira_integration_request_duration_seconds_count{{integration="{name}"}} (\S+)', text
        )
        assert count and float(count[1]) > 0
    assert re.search(
        r'mira_integration_requests_total\{integration="github",result="error"\} [1-9]', text
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"target": "github", "repository": "no-slash", "plan": LAUNCH}, "data.repository"),
        ({"target": "gitlab", "plan": LAUNCH}, "data.target"),
        ({"target": "jira", "project": "MIRA"}, "data.plan"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field(
    service: Service, data: dict[str, Any], field: str
) -> None:
    status, body = service.post({"type": "publish_plan", "data": data})
    assert (status, body["field"]) == (400, field)
    assert body["error"].startswith(f"{field}: ")


def test_no_credential_in_logs_ready_metrics_or_answers(service: Service) -> None:
    service.assert_no_leak(SECRETS)


def test_misconfigured_integrations_answer_409_naming_what_is_missing(tmp_path: Path) -> None:
    config = {
        "integrations": {
            "github": {"enabled": True, "base_url": "http://127.0.0.1:9/api/v3"},
            "jira": {"enabled": True, "url": "ftp://jira.example", "api_token": JIRA_TOKEN},
        }
    }
    with running(tmp_path, config) as service:
        status, body = service.post(publish("github", "acme/app", LAUNCH))
        assert (status, body["field"]) == (409, "integrations.github.token")
        assert (
            "github integration unavailable: integrations.github.token is not set" in body["error"]
        )
        status, body = service.post(publish("jira", "MIRA", LAUNCH))
        assert (status, body["field"]) == (409, "integrations.jira.url")
        assert "must be an http(s) URL" in body["error"]
        ready = service.ready()["integrations"]
        assert ready["github"]["configured"] is False
        assert ready["github"]["reason"].startswith("integrations.github.token is not set")
        assert ready["jira"]["configured"] is False
        service.assert_no_leak(SECRETS)


def _write_config(service: Service, config: dict[str, Any]) -> None:
    """An atomic save, as editors and ConfigMap updates do."""
    path = service.process.config_path
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config))
    os.replace(tmp, path)


def test_hot_reload_of_the_integrations_section_rebuilds_or_disables_the_client(
    tmp_path: Path,
) -> None:
    with FakeGithub({GH_TOKEN}) as first, FakeGithub({GH_TOKEN}) as second:
        config: dict[str, Any] = {
            "config": {"hot_reload": True, "poll_interval": 0.2},
            "integrations": {"github": {"enabled": True, "base_url": first.base_url}},
        }
        with running(tmp_path, config, {"GITHUB_TOKEN": GH_TOKEN}) as service:
            assert service.post(publish("github", "acme/app", LAUNCH))[0] == 200
            assert len(first.milestones["acme/app"]) == 2

            config["integrations"]["github"]["base_url"] = second.base_url
            _write_config(service, config)
            service.wait_logged("Integration client rebuilt with current credentials")
            calls_on_first = len(first.calls)
            status, body = service.post(publish("github", "acme/app", LAUNCH))
            assert status == 200 and body["data"]["created"]["milestones"] == ["MVP", "Beta"]
            assert len(second.milestones["acme/app"]) == 2 and len(first.calls) == calls_on_first

            config["integrations"]["github"]["enabled"] = False
            _write_config(service, config)
            wait_until(
                lambda: "github" not in service.ready().get("integrations", {}),
                timeout=10,
                message="github to leave /ready",
            )
            status, body = service.post(publish("github", "acme/app", LAUNCH))
            assert (status, body["field"]) == (409, "integrations.github.enabled")
            assert "integrations.github.enabled is false" in body["error"]
            service.assert_no_leak(SECRETS)


class Publisher:
    """Publishes over HTTP in a bounded loop (count and time) until stopped; keeps every result."""

    def __init__(self, service: Service, repository: str, limit: int = 400) -> None:
        self.service, self.repository, self.limit = service, repository, limit
        self.results: list[tuple[int, Any]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"publisher-{repository}")

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        try:
            for i in range(self.limit):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                plan = plan_input(f"Rotation {i % 4}", [f"Goal {i % 4}"])
                self.results.append(self.service.post(publish("github", self.repository, plan)))
        except BaseException as exc:  # surfaced by the test, never lost with the thread
            self.error = exc

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=35)


def rotation_config(openbao: VaultServer, github: FakeGithub) -> dict[str, Any]:
    """Vault backend refreshing every 0.3 s; the GitHub token is a secret:// reference."""
    openbao.client.secrets.kv.v2.create_or_update_secret(
        "github-credentials", secret={"token": OLD}
    )
    return {
        "secrets": {
            "backend": "vault",
            "auto_refresh": True,
            "refresh_interval": 0.3,
            "vault": {"url": openbao.url, "timeout": 2},
        },
        "integrations": {
            "github": {
                "enabled": True,
                "token": "secret://github-credentials:token",
                "base_url": github.base_url,
            }
        },
    }


def test_rotating_the_token_in_openbao_switches_authorization_with_no_failed_call(
    openbao: VaultServer, tmp_path: Path
) -> None:
    kv = openbao.client.secrets.kv.v2
    token = vault_token(openbao)
    with FakeGithub({OLD, NEW}, repositories=("acme/one", "acme/two")) as github:
        config = rotation_config(openbao, github)
        with running(tmp_path, config, {"MIRA_VAULT_TOKEN": token}) as service:
            pid = service.process.proc.pid  # type: ignore[union-attr]
            with Publisher(service, "acme/one") as one, Publisher(service, "acme/two") as two:
                wait_until(lambda: len(one.results) + len(two.results) >= 10, timeout=15)
                rotated_at = time.monotonic()
                kv.create_or_update_secret("github-credentials", secret={"token": NEW})
                first_new = wait_until(
                    lambda: _first_with(github, NEW), timeout=10, message="the new token in use"
                )
                switch_seconds = first_new.at - rotated_at
                time.sleep(0.3)  # the grace moment in which GitHub still honours the old token
                github.set_tokens({NEW})
                revoked_at = time.monotonic()
                done = len(one.results) + len(two.results)
                wait_until(lambda: len(one.results) + len(two.results) >= done + 10, timeout=15)
            assert one.error is None and two.error is None
            results = one.results + two.results
            failed = [r for r in results if r[0] != 200]
            assert failed == [], failed[:3]
            assert all(c.status < 400 for c in github.calls)
            after = [c for c in github.calls if c.at > revoked_at]
            assert after and all(_auth(c) == f"Bearer {NEW}" for c in after)
            assert service.process.proc.pid == pid and service.process.proc.poll() is None  # type: ignore[union-attr]
            assert len(service.logged("Integration client rebuilt with current credentials")) == 1
            print(f"\nrotation: {len(results)} publishes, 0 failed; new token used "
                  f"{switch_seconds:.2f} s after the write to OpenBao")  # fmt: skip
            service.assert_no_leak([*SECRETS, token])


def _auth(call: Any) -> str | None:
    return call.headers.get("Authorization")


def _first_with(github: FakeGithub, token: str) -> Any:
    with github.lock:
        return next((c for c in github.calls if _auth(c) == f"Bearer {token}"), None)


class HoldingGithub(FakeGithub):
    """Holds requests for one repository until released: a call in flight during a rotation."""

    def __init__(self, tokens: set[str], held_repository: str) -> None:
        super().__init__(tokens, repositories=(held_repository,))
        self.prefix = f"{self.PREFIX}/repos/{held_repository}/"
        self.release = threading.Event()
        self.holding = threading.Event()

    def dispatch(self, request: Any) -> None:
        if request.path.startswith(self.prefix) and not self.release.is_set():
            self.holding.set()
            self.release.wait(15)
        super().dispatch(request)


def test_a_call_in_flight_during_rotation_finishes_on_the_old_token_and_the_next_uses_the_new(
    openbao: VaultServer, tmp_path: Path
) -> None:
    token = vault_token(openbao)
    with HoldingGithub({OLD, NEW}, "acme/slow") as github:
        config = rotation_config(openbao, github)
        with running(tmp_path, config, {"MIRA_VAULT_TOKEN": token}) as service:
            answer: list[tuple[int, Any]] = []
            message = publish("github", "acme/slow", LAUNCH)
            thread = threading.Thread(target=lambda: answer.append(service.post(message)))
            thread.start()
            try:
                assert github.holding.wait(10), "the publish never reached the server"
                openbao.client.secrets.kv.v2.create_or_update_secret(
                    "github-credentials", secret={"token": NEW}
                )
                service.wait_logged("Integration client rebuilt with current credentials")
            finally:
                github.release.set()
                thread.join(timeout=20)
            assert answer and answer[0][0] == 200, answer
            assert answer[0][1]["data"]["created"]["issues"] == TITLES
            auths = [_auth(c) for c in github.calls]
            assert auths[0] == f"Bearer {OLD}" and len(auths) == 10  # 2 lists, 2 + 6 creates
            assert set(auths[1:]) == {f"Bearer {NEW}"}
            service.assert_no_leak([*SECRETS, token])
