"""The integrations' retry rules on urllib3's Retry, and the caller's errors: no sleeps, no network.

urllib3 asks the Retry object what to do (is_retry, increment, sleep); these tests ask it the same
questions with real urllib3 responses and errors.
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

import pytest
import requests
from structlog.testing import capture_logs
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from mira.domain.config.model import GithubSettings
from mira.plans.github import GithubClient
from mira.plans.http import BACKOFF_JITTER, RETRY_AFTER_MAX, Caller, IntegrationRetry, retry_policy
from mira.plans.ports import IntegrationError

TOKEN = "ghp_unit_secret_token_value"


def _answer(status: int, headers: dict[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(body=b"{}", status=status, headers=headers or {}, preload_content=True)


def _retry(retries: int = 3) -> tuple[IntegrationRetry, list[float]]:
    slept: list[float] = []
    return retry_policy("github", retries, sleep=slept.append), slept


def _fail(retry: IntegrationRetry, method: str, answer: HTTPResponse) -> IntegrationRetry:
    """What urllib3 does with an answer it may retry: ask, count, wait."""
    assert retry.is_retry(method, answer.status, "Retry-After" in answer.headers)
    retry = retry.increment(method, "/repos/acme/app/issues?page=2", response=answer)
    retry.sleep(answer)
    return retry


def test_server_errors_on_a_get_are_retried_with_capped_jittered_backoff() -> None:
    retry, slept = _retry()
    with capture_logs() as logs:
        for status in (503, 500, 502):
            retry = _fail(retry, "GET", _answer(status))
    # urllib3's schedule: the first retry at once, then 0.2 * 2 ** (n - 1) plus up to 0.1 jitter
    assert len(slept) == 2
    assert 0.4 <= slept[0] <= 0.4 + BACKOFF_JITTER and 0.8 <= slept[1] <= 0.8 + BACKOFF_JITTER
    assert [(e["status"], e["attempt"], e["path"]) for e in logs] == [
        (503, 1, "/repos/acme/app/issues"),
        (500, 2, "/repos/acme/app/issues"),
        (502, 3, "/repos/acme/app/issues"),
    ]
    assert {e["integration"] for e in logs} == {"github"}
    with pytest.raises(MaxRetryError):  # max_retries spent: urllib3 hands back the last answer
        retry.increment("GET", "/x", response=_answer(503))


def test_backoff_never_exceeds_the_cap() -> None:
    retry, _ = _retry(retries=20)
    for _ in range(12):
        retry = retry.increment("GET", "/x", response=_answer(500))
    assert retry.get_backoff_time() <= 5.0


def test_retry_after_seconds_and_http_date_are_honoured_and_capped() -> None:
    retry, slept = _retry()
    date = formatdate(time.time() + 12, usegmt=True)
    retry = _fail(retry, "GET", _answer(429, {"Retry-After": "3"}))
    retry = _fail(retry, "GET", _answer(503, {"Retry-After": date}))
    retry = _fail(retry, "GET", _answer(429, {"Retry-After": "3600"}))
    assert slept[0] == 3 and 10 <= slept[1] <= 12 and slept[2] == RETRY_AFTER_MAX


def test_an_unreadable_retry_after_falls_back_to_the_backoff() -> None:
    retry, slept = _retry()
    retry = _fail(retry, "GET", _answer(503))
    _fail(retry, "GET", _answer(503, {"Retry-After": "soon"}))
    assert len(slept) == 1 and 0.4 <= slept[0] <= 0.5


def test_a_post_is_repeated_only_where_it_cannot_have_been_carried_out() -> None:
    retry, _ = _retry()
    assert not retry.is_retry("POST", 502) and not retry.is_retry("POST", 500)
    assert retry.is_retry("POST", 503) and retry.is_retry("POST", 429)
    refused = NewConnectionError(None, "connection refused")  # type: ignore[arg-type]
    assert retry.increment("POST", "/issues", error=refused).history[-1].error is refused
    for sent in (ProtocolError("reset by peer"), ReadTimeoutError(None, "/issues", "timed out")):  # type: ignore[arg-type]
        with pytest.raises(type(sent)):
            retry.increment("POST", "/issues", error=sent)
    assert retry.increment("GET", "/issues", error=ProtocolError("reset")).history


def test_githubs_rate_limit_403_is_waited_out_and_any_other_403_answered_at_once() -> None:
    retry, slept = _retry()
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 4)}
    _fail(retry, "GET", _answer(403, reset))
    assert 2.5 <= slept[0] <= 4.0
    with pytest.raises(MaxRetryError):
        retry.increment("GET", "/repos/acme/app", response=_answer(403))


class ScriptedSession(requests.Session):
    """Answers each request with the next scripted response, after running it if callable."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__()
        self.script = script
        self.closed = False

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        step = self.script.pop(0)
        step = step() if callable(step) else step
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> None:
        self.closed = True


def _response(status: int, body: Any = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body if body is not None else {}).encode()
    return response


def _caller(script: list[Any]) -> tuple[Caller, ScriptedSession]:
    session = ScriptedSession(script)
    return Caller("github", retry_policy("github", 3), 5.0, {}, (TOKEN,), session), session


def test_a_rejected_token_fails_clearly_without_the_token() -> None:
    caller, _ = _caller([_response(401, {"message": f"Bad credentials for {TOKEN}"})])
    with pytest.raises(IntegrationError) as caught:
        caller.request("GET", "http://127.0.0.1/user")
    assert caught.value.upstream_status == 401 and caught.value.status == 502
    assert TOKEN not in str(caught.value) and "**********" in str(caught.value)
    assert "credentials rejected" in str(caught.value)


def test_a_connection_failure_names_the_origin_only() -> None:
    caller, _ = _caller([requests.ConnectionError(f"refused, token {TOKEN}")])
    with pytest.raises(IntegrationError) as caught:
        caller.request("GET", "http://127.0.0.1:9/repos?access=x")
    assert str(caught.value) == "github: ConnectionError talking to http://127.0.0.1:9"


def test_close_waits_for_the_call_in_flight() -> None:
    holder: list[Caller] = []

    def close_mid_call() -> Any:
        holder[0].close()  # what a credential swap does while this call is running
        assert not session.closed
        return _response(200)

    caller, session = _caller([close_mid_call])
    holder.append(caller)
    caller.request("GET", "http://127.0.0.1/x")
    assert session.closed


def test_client_repr_hides_the_token() -> None:
    client = GithubClient(GithubSettings(enabled=True, base_url="http://127.0.0.1:9"), TOKEN)
    assert TOKEN not in repr(client)
