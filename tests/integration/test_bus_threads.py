"""The bus and the request metrics with real threads (the unit tier starts none)."""

from __future__ import annotations

import json
import threading

import structlog

from mira.adapters.prometheus_metrics import Metrics
from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import load_settings
from mira.service_layer.bus import MessageBus
from mira.testing import RecordingJournal
from tests.unit.test_request_metrics import key, samples


def apply(data: object) -> cmd.ApplyConfig:
    parsed = load_settings(json.dumps(data), "c.json", {})
    return cmd.ApplyConfig(correlation_id="c", at=1.0, source="c.json", parsed=parsed)


def test_a_failing_handler_stops_neither_the_others_nor_the_bus() -> None:
    bus = MessageBus(RecordingJournal())
    calls: list[str] = []

    def broken(event: ev.Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(ev.ConfigLoaded, broken)
    bus.subscribe(ev.Event, lambda e: calls.append(e.name))
    bus.start()
    try:
        bus.handle(apply({}))
        bus.handle(cmd.MarkReady(correlation_id="c", at=2.0))
    finally:
        bus.stop()
    assert calls == ["ConfigLoaded", "ServiceReady"]


def test_commands_from_many_threads_are_processed_one_at_a_time() -> None:
    bus = MessageBus(RecordingJournal())
    bus.start()
    bus.handle(apply({}))
    futures = []

    def send(i: int) -> None:
        futures.append(bus.submit(apply({"logging": {"level": "DEBUG" if i % 2 else "INFO"}})))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(5) for f in futures]
    bus.stop()
    changed = sum(isinstance(e, ev.ConfigChanged) for r in results for e in r)
    assert bus.state.config_generation == 1 + changed


def test_other_threads_see_a_new_state_only_after_its_effects_ran() -> None:
    bus = MessageBus(RecordingJournal())
    seen_elsewhere: list[int] = []
    seen_on_bus: list[int] = []

    def effect(event: ev.ConfigLoaded) -> None:
        seen_on_bus.append(bus.state.config_generation)
        reader = threading.Thread(target=lambda: seen_elsewhere.append(bus.state.config_generation))
        reader.start()
        reader.join()

    bus.subscribe(ev.ConfigLoaded, effect)
    bus.process_inline(apply({}))
    assert seen_on_bus == [1]  # handlers work with the state they are applying
    assert seen_elsewhere == [0]  # a reader (an HTTP thread) does not see it half-applied
    assert bus.state.config_generation == 1


def test_a_command_handled_inline_by_a_handler_keeps_the_outer_context() -> None:
    bus = MessageBus(RecordingJournal())
    seen: list[tuple[str, str]] = []

    def effect(event: ev.ConfigLoaded) -> None:
        bus.handle(cmd.MarkReady(correlation_id="inner", at=2.0))
        reader = threading.Thread(target=lambda: seen.append(("reader", bus.state.phase.value)))
        reader.start()
        reader.join()
        seen.append(("handler", bus.state.phase.value))
        seen.append(("id", str(structlog.contextvars.get_contextvars().get("correlation_id"))))

    bus.subscribe(ev.ConfigLoaded, effect)
    bus.process_inline(apply({}))
    # the inner command did not publish early, nor took the outer command's id away
    assert seen == [("reader", "starting"), ("handler", "ready"), ("id", "c")]
    assert bus.state.phase.value == "ready"


def test_observations_from_many_threads_all_count() -> None:
    metrics = Metrics()

    def work() -> None:
        for _ in range(1000):
            metrics.observe_request("GET", "/health", 200, 0.002)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = samples(metrics)
    labels = {"method": "GET", "route": "/health", "status": "200"}
    assert got[key("mira_http_requests_total", **labels)] == 8000
    assert got[key("mira_http_request_duration_seconds_count", **labels)] == 8000
    assert abs(got[key("mira_http_request_duration_seconds_sum", **labels)] - 16.0) < 1e-6
