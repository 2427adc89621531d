"""The message bus (decide, journal, then handlers) and the message handler registry."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import load_settings
from mira.domain.messages import InvalidMessage, UnknownMessageType
from mira.plans.handlers import plan_handler
from mira.service_layer.bus import MessageBus
from mira.service_layer.messages import MessageHandlers
from mira.testing import RecordingJournal


def apply(data: object) -> cmd.ApplyConfig:
    parsed = load_settings(json.dumps(data), "c.json", {})
    return cmd.ApplyConfig(correlation_id="c", at=1.0, source="c.json", parsed=parsed)


def test_events_are_journaled_before_handlers_run_and_state_is_updated() -> None:
    journal = RecordingJournal()
    bus = MessageBus(journal)
    seen: list[int] = []
    bus.subscribe(ev.ConfigLoaded, lambda e: seen.append(len(journal.events)))
    events = bus.process_inline(apply({}))
    assert [type(e) for e in events] == [ev.ConfigLoaded]
    assert seen == [1]
    assert bus.state.config_generation == 1


def test_submit_before_start_fails_clearly() -> None:
    future = MessageBus(RecordingJournal()).submit(apply({}))
    with pytest.raises(RuntimeError, match="not running"):
        future.result(1)


def _plan_handlers() -> MessageHandlers:
    handlers = MessageHandlers()
    handlers.register("generate_plan", plan_handler(lambda: dt.date(2026, 1, 1)))
    return handlers


def test_unknown_message_type_names_the_supported_types() -> None:
    handlers = _plan_handlers()
    with pytest.raises(UnknownMessageType, match="supported types: generate_plan"):
        handlers.process_message({"type": "make_coffee", "data": {}})


def test_registry_is_extensible_and_validates_the_envelope() -> None:
    handlers = _plan_handlers()
    handlers.register("echo", lambda data: dict(data))
    assert handlers.process_message({"type": "echo", "data": {"a": 1}}) == {"a": 1}
    assert handlers.types() == ["echo", "generate_plan"]
    with pytest.raises(InvalidMessage, match="data: is required"):
        handlers.process_message({"type": "echo"})
    with pytest.raises(InvalidMessage, match="type: is required"):
        handlers.process_message({"data": {}})
