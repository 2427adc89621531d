"""An embedding app swaps adapters through the container and serves real HTTP in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from dependency_injector import providers

from mira.app import MiraApplication
from mira.container import Container
from mira.testing import InMemorySecretsBackend
from mira.utils.secrets_manager import get_secrets_manager
from tests.support import free_port, http


@pytest.fixture
def app(tmp_path: Path) -> Iterator[MiraApplication]:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "server": {"host": "127.0.0.1", "port": free_port()},
                "integrations": {"github": {"token": "secret://github-credentials:token"}},
                "logging": {"file": str(tmp_path / "app.log")},
            }
        )
    )
    container = Container()
    backend = InMemorySecretsBackend({"github-credentials": {"token": "ghp_embedded_value"}})
    container.secrets_backend.override(providers.Object(backend))

    def boom(data: Mapping[str, Any]) -> Any:
        raise RuntimeError("handler exploded")

    container.message_handlers().register("echo", lambda data: {"echo": dict(data)})
    container.message_handlers().register("boom", boom)
    application = MiraApplication(str(config), container=container)
    application.start()
    yield application
    application.stop()


def url(app: MiraApplication, path: str) -> str:
    assert app.address is not None
    return f"http://127.0.0.1:{app.address[1]}{path}"


def test_overridden_backend_resolves_references(app: MiraApplication) -> None:
    value = get_secrets_manager().get("secret://github-credentials:token")
    assert value is not None and value.reveal() == "ghp_embedded_value"
    assert "ghp_embedded_value" not in repr(value) + str(value)


def test_added_handler_serves_over_http_and_in_process(app: MiraApplication) -> None:
    status, _, body = http("POST", url(app, "/api/v1/messages"), {"type": "echo", "data": {"a": 1}})
    assert status == 200 and json.loads(body) == {"status": "success", "data": {"echo": {"a": 1}}}
    assert app.process_message({"type": "echo", "data": {"b": 2}}) == {"echo": {"b": 2}}
    plan = app.process_message(
        {"type": "generate_plan", "data": {"name": "n", "goals": ["g"], "duration_weeks": 1}}
    )
    assert plan["milestones"][0]["week"] == 1


def test_a_raising_handler_gets_500_with_the_id_and_the_service_keeps_serving(
    app: MiraApplication, tmp_path: Path
) -> None:
    status, headers, body = http(
        "POST",
        url(app, "/api/v1/messages"),
        {"type": "boom", "data": {}},
        headers={"X-Request-ID": "boom-1"},
    )
    payload = json.loads(body)
    assert status == 500
    assert payload == {
        "status": "error",
        "error": "internal server error",
        "correlation_id": "boom-1",
    }
    assert headers["X-Request-ID"] == "boom-1"
    lines = [json.loads(x) for x in (tmp_path / "app.log").read_text().splitlines()]
    logged = [x for x in lines if x["correlation_id"] == "boom-1" and "exception" in x]
    assert logged and "handler exploded" in logged[0]["exception"]
    assert http("GET", url(app, "/health"))[0] == 200


def test_a_request_through_the_test_client_keeps_the_caller_s_log_context(
    app: MiraApplication, tmp_path: Path
) -> None:
    """A test binds its own structlog context and calls Mira's Flask app in its own thread:
    the request's lines carry the request's id and the test's fields, and afterwards the
    test's context is as it was (what the request bound ends with it)."""
    structlog.contextvars.bind_contextvars(test_case="ctx-1", correlation_id="outer")
    try:
        client = app.container.web_app().test_client()
        answer = client.post(
            "/api/v1/messages",
            json={"type": "echo", "data": {}},
            headers={"X-Request-ID": "inner-1"},
        )
        assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "inner-1"
        after = structlog.contextvars.get_contextvars()
    finally:
        structlog.contextvars.clear_contextvars()
    assert after == {"test_case": "ctx-1", "correlation_id": "outer"}
    app.container.logging().flush()
    lines = [json.loads(x) for x in (tmp_path / "app.log").read_text().splitlines()]
    ours = {x["message"]: x for x in lines if x["correlation_id"] == "inner-1"}
    assert set(ours) == {"Processing message", "Request handled"}
    assert ours["Processing message"]["test_case"] == "ctx-1"
