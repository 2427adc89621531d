"""server.max_threads: its default and the rule that ties it to server.threads."""

from __future__ import annotations

import json

from mira.container import engine_settings
from mira.domain.config.loading import load_settings


def load(raw: dict[str, object]) -> tuple[object, tuple[str, ...]]:
    result = load_settings(json.dumps(raw), "c.json", {})
    return result.settings, result.errors


def test_max_threads_below_threads_is_rejected_naming_both() -> None:
    (error,) = load({"server": {"threads": 8, "max_threads": 4}})[1]
    assert error == (
        "c.json: server.max_threads (4) must be at least server.threads (8): "
        "the app's threads are among them"
    )
    (error,) = load({"server": {"max_threads": 0}})[1]
    assert "server.max_threads" in error and "at least 1" in error


def test_max_threads_reaches_the_engine_and_defaults_to_null() -> None:
    settings, errors = load({})
    assert errors == ()
    assert engine_settings(settings)["max_threads"] is None  # type: ignore[arg-type]
    settings, errors = load({"server": {"threads": 8, "max_threads": 8}})
    assert errors == ()
    assert engine_settings(settings)["max_threads"] == 8  # type: ignore[arg-type]
