"""management.* and server.api_tokens: validation, masking, references, the token check."""

from __future__ import annotations

import json

from mira.adapters.bearer_auth import BearerTokens
from mira.domain.config.loading import load_settings, restart_required
from mira.domain.config.masking import masked_dict
from mira.domain.config.secret_refs import SecretRef, find_refs
from mira.domain.secret_value import SecretValue


def load(raw: dict[str, object]) -> tuple[object, tuple[str, ...]]:
    result = load_settings(json.dumps(raw), "c.json", {})
    return result.settings, result.errors


def test_a_management_host_without_a_port_and_a_shared_port_are_rejected() -> None:
    assert load({"management": {"host": "127.0.0.1"}})[1] == (
        "c.json: management.host is set but management.port is null; set both or neither",
    )
    (error,) = load({"server": {"port": 8080}, "management": {"port": 8080}})[1]
    assert "management.port (8080) must differ from server.port" in error
    assert load({"server": {"port": 8080}, "management": {"port": 8081}})[1] == ()


def test_short_literal_api_tokens_are_rejected_without_echoing_them() -> None:
    (error,) = load({"server": {"api_tokens": ["secret://api:token", "abc"]}})[1]
    assert "server.api_tokens: [1] must be at least 8 characters" in error
    assert "abc" not in error


def test_api_token_references_are_found_and_literals_masked() -> None:
    settings, errors = load({"server": {"api_tokens": ["secret://api:token", "literal-123456"]}})
    assert errors == ()
    assert find_refs(settings)["server.api_tokens[0]"] == SecretRef("api", "token")
    masked = masked_dict(settings)  # type: ignore[arg-type]
    assert masked["server"]["api_tokens"] == ["secret://api:token", "**********"]


def test_api_tokens_change_live_and_the_management_address_needs_a_restart() -> None:
    keys = ("server.api_tokens", "management.port", "management.token", "server.port")
    assert restart_required(keys) == ("management.port", "server.port")


def test_bearer_tokens_accept_only_a_current_value_and_never_quote_it() -> None:
    values = {"secret://api:token": SecretValue("rotated-value-2")}
    tokens = BearerTokens(
        lambda: ("secret://api:token", "secret://missing:key"),
        lambda text: values.get(text or ""),
    )
    assert tokens.problem("Bearer rotated-value-2") is None
    for header in (None, "", "Basic abc", "Bearer ", "Bearer secret://api:token", "Bearer nope"):
        problem = tokens.problem(header)
        assert problem is not None and "Authorization" in problem
        assert "rotated-value-2" not in problem
    assert not BearerTokens(lambda: (), lambda text: None).configured
