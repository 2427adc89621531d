"""Bad input on the message API, sent over loopback HTTP to the real service (a subprocess) with
GitHub enabled against the local fake: each is a 4xx naming the field, never a 5xx; the answer
and the upstream writes stay within the bounds DEPLOYMENT.md states."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mira.adapters.json_body import MAX_DEPTH, MAX_RESPONSE_BYTES
from mira.plans.domain import MAX_GOALS, MAX_GOALS_TEXT, MAX_NAME
from mira.plans.validation import MAX_MILESTONES, MAX_WRITES
from tests.integration.fake_github import FakeGithub
from tests.integration.integrations_support import Service, running

pytestmark = pytest.mark.integration

TOKEN = "ghp_api_input_token_8080"
URL = "/api/v1/messages"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGithub]:
    with FakeGithub({TOKEN}, any_repository=True) as server:
        yield server


@pytest.fixture(scope="module")
def service(github: FakeGithub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    config = {"integrations": {"github": {"enabled": True, "base_url": github.base_url}}}
    workdir: Path = tmp_path_factory.mktemp("api-input")
    with running(workdir, config, {"GITHUB_TOKEN": TOKEN}) as svc:
        yield svc


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _send(
    service: Service,
    session: requests.Session,
    body: bytes,
    content_type: str | None = "application/json",
) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return session.post(service.process.url + URL, data=body, headers=headers, timeout=30)


def _post(service: Service, session: requests.Session, message: Any) -> requests.Response:
    return _send(service, session, json.dumps(message).encode())


def _plan(**data: Any) -> dict[str, Any]:
    base = {"name": "Launch", "goals": ["MVP"], "duration_weeks": 4, "start_date": "2026-01-05"}
    return {"type": "generate_plan", "data": {**base, **data}}


def _assert_names(response: requests.Response, status: int, field: str, text: str = "") -> None:
    body = response.json()
    assert (response.status_code, body["field"]) == (status, field), body
    assert body["error"].startswith(f"{field}: ") and text in body["error"]


# --- item 8: input that used to raise inside the service -------------------------------------


def test_json_nested_1000_deep_is_a_400_naming_the_body(
    service: Service, session: requests.Session
) -> None:
    deep = b'{"type": "generate_plan", "data": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    _assert_names(_send(service, session, deep), 400, "body", f"nested more than {MAX_DEPTH}")
    just_over = json.dumps({"type": "echo", "data": {"a": _nest(MAX_DEPTH)}}).encode()
    _assert_names(_send(service, session, just_over), 400, "body", "nested")


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_an_integer_of_5000_digits_is_a_400_naming_the_body(
    service: Service, session: requests.Session
) -> None:
    raw = b'{"type": "generate_plan", "data": {"duration_weeks": 1' + b"0" * 5000 + b"}}"
    _assert_names(_send(service, session, raw), 400, "body", "malformed JSON at line 1")


def test_a_start_date_too_late_for_the_duration_is_a_400_also_through_publish_plan(
    service: Service, session: requests.Session
) -> None:
    late = _plan(start_date="9999-12-31")
    _assert_names(_post(service, session, late), 400, "data.start_date", "no room for 4 weeks")
    message = {
        "type": "publish_plan",
        "data": {"target": "github", "repository": "acme/late", "plan": late["data"]},
    }
    _assert_names(_post(service, session, message), 400, "data.plan.start_date")


# --- item 11: only UTF-8 application/json ----------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("text/plain", "utf-8"),
        (None, "utf-8"),
        ("application/x-www-form-urlencoded", "utf-8"),
        ("application/json; charset=latin-1", "utf-8"),
        ("application/json", "utf-16"),
    ],
)
def test_a_body_that_is_not_utf8_application_json_is_a_415_naming_the_type(
    service: Service, session: requests.Session, content_type: str | None, encoding: str
) -> None:
    body = json.dumps(_plan()).encode(encoding)
    answer = _send(service, session, body, content_type)
    _assert_names(answer, 415, "body", "application/json")


def test_json_with_a_utf8_charset_is_accepted(service: Service, session: requests.Session) -> None:
    body = json.dumps(_plan(name="Lancement é")).encode()
    answer = _send(service, session, body, "application/json; charset=UTF-8")
    assert answer.status_code == 200 and answer.json()["data"]["name"] == "Lancement é"


# --- item 9: bounded answers and upstream writes ---------------------------------------------


def test_the_largest_plan_accepted_stays_within_the_response_bound(
    service: Service, session: requests.Session
) -> None:
    goal = "\U0001f680" * (MAX_GOALS_TEXT // MAX_GOALS)  # 4 bytes each in UTF-8
    message = _plan(name="\U0001f680" * MAX_NAME, goals=[goal] * MAX_GOALS, duration_weeks=520)
    answer = _post(service, session, message)
    assert answer.status_code == 200
    assert len(answer.content) < MAX_RESPONSE_BYTES // 2
    assert len(answer.json()["data"]["milestones"]) == MAX_GOALS


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"goals": ["g"] * (MAX_GOALS + 1)}, "data.goals"),
        ({"goals": ["g" * 150] * 40}, "data.goals"),  # 6000 characters in all
        ({"goals": ["x" * 900_000]}, "data.goals[0]"),  # the 1 MB request of the report
        ({"name": "n" * (MAX_NAME + 1)}, "data.name"),
        ({"description": "d" * 2001}, "data.description"),
    ],
)
def test_text_over_the_caps_is_a_400_with_a_short_answer(
    service: Service, session: requests.Session, data: dict[str, Any], field: str
) -> None:
    answer = _post(service, session, _plan(**data))
    _assert_names(answer, 400, field)
    assert len(answer.content) < 1000


def _publish(repository: str, milestones: list[dict[str, Any]]) -> dict[str, Any]:
    plan = {"milestones": milestones}
    return {
        "type": "publish_plan",
        "data": {"target": "github", "repository": repository, "plan": plan},
    }


def test_300_milestones_are_refused_before_any_github_call(
    service: Service, session: requests.Session, github: FakeGithub
) -> None:
    before = len(github.calls)
    many = [{"title": f"M{i}", "tasks": [{"title": f"T{i}"}]} for i in range(300)]
    _assert_names(_post(service, session, _publish("acme/many", many)), 400, "data.plan.milestones")
    tasks = [
        {"title": f"M{i}", "tasks": [{"title": f"T{i}.{j}"} for j in range(9)]} for i in range(40)
    ]
    _assert_names(_post(service, session, _publish("acme/many", tasks)), 400, "data.plan")
    assert len(github.calls) == before


def test_a_publish_at_the_bounds_makes_at_most_the_stated_writes(
    service: Service, session: requests.Session, github: FakeGithub
) -> None:
    per = MAX_WRITES // MAX_MILESTONES - 1
    milestones = [
        {"title": f"M{i}", "tasks": [{"title": f"T{i}.{j}"} for j in range(per)]}
        for i in range(MAX_MILESTONES)
    ]
    before = len(github.calls_matching("POST", "."))
    answer = _post(service, session, _publish("acme/bounded", milestones))
    assert answer.status_code == 200, answer.text
    assert len(github.calls_matching("POST", ".")) - before == MAX_WRITES


# --- property-based: no input yields a 5xx ---------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
DATES = st.dates().map(lambda d: d.isoformat()) | st.text(max_size=12)
TITLES = st.sampled_from(["Alpha", "Beta", "Gamma", "Plan: Alpha"]) | JSON


def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields`, each valued by its strategy."""
    return st.fixed_dictionaries({}, optional=fields)


PLAN_INPUT = _maybe(
    name=st.text(max_size=30) | JSON,
    description=st.text(max_size=30) | JSON,
    goals=st.lists(st.text(max_size=20), max_size=4) | JSON,
    duration_weeks=st.integers(-5, 600) | JSON,
    start_date=DATES | JSON,
)
TASK = _maybe(title=TITLES, description=JSON, week=st.integers() | JSON) | JSON
MILESTONE = (
    _maybe(
        title=TITLES,
        goal=JSON,
        due_date=DATES | JSON,
        tasks=st.lists(TASK, max_size=3) | JSON,
        id=JSON,
    )
    | JSON
)
FULL_PLAN = _maybe(milestones=st.lists(MILESTONE, max_size=3) | JSON)
PUBLISH = _maybe(
    target=st.sampled_from(["github", "jira"]) | JSON,
    repository=st.sampled_from(["acme/fuzz", "acme/fuzz-2"]) | st.text(max_size=12) | JSON,
    project=st.sampled_from(["MIRA"]) | JSON,
    plan=PLAN_INPUT | FULL_PLAN | JSON,
)
MESSAGES = (
    st.fixed_dictionaries({"type": st.just("generate_plan"), "data": PLAN_INPUT | JSON})
    | st.fixed_dictionaries({"type": st.just("publish_plan"), "data": PUBLISH | JSON})
    | _maybe(type=st.text(max_size=20) | JSON, data=JSON)
    | JSON
)


def _no_5xx(answer: requests.Response) -> None:
    assert answer.status_code < 500, answer.text[:500]
    if answer.status_code >= 400:
        body = answer.json()
        assert body["status"] == "error" and body["field"], body


@FUZZ
@given(message=MESSAGES)
def test_no_message_yields_a_5xx(service: Service, session: requests.Session, message: Any) -> None:
    _no_5xx(_post(service, session, message))


@FUZZ
@given(
    body=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain"])
)
def test_no_body_yields_a_5xx(
    service: Service, session: requests.Session, body: bytes, content_type: str
) -> None:
    _no_5xx(_send(service, session, body, content_type))
