"""The lifecycle decider: each shutdown step decided in the domain, and the exit codes."""

from __future__ import annotations

import json
from functools import reduce
from typing import Any

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import load_settings
from mira.domain.decider import decide
from mira.domain.state import Phase, RuntimeState, evolve

META: dict[str, Any] = {"correlation_id": "c-1", "at": 1000.0}


def config(data: dict[str, Any] | None = None) -> cmd.ApplyConfig:
    parsed = load_settings(json.dumps(data or {}), "config.json", {})
    return cmd.ApplyConfig(source="config.json", parsed=parsed, **META)


def given(*commands: cmd.Command) -> RuntimeState:
    state = RuntimeState()
    for command in commands:
        state = reduce(evolve, decide(command, state), state)
    return state


def when(state: RuntimeState, command: cmd.Command) -> tuple[list[ev.Event], RuntimeState]:
    events = decide(command, state)
    return events, reduce(evolve, events, state)


SHUTDOWN = {"shutdown": {"drain_delay": 5, "timeout": 20, "hooks_timeout": 4, "hook_timeout": 2}}
READY = (config(SHUTDOWN), cmd.MarkReady(**META))
TERM = cmd.RequestShutdown(signal="SIGTERM", **META)


def test_every_step_of_a_clean_shutdown_is_decided_in_order() -> None:
    state = given(*READY)
    assert state.phase is Phase.READY
    events, state = when(state, TERM)
    assert [type(e) for e in events] == [ev.ShutdownRequested, ev.DrainStarted]
    assert events[1].drain_delay == 5 and state.phase is Phase.DRAINING  # type: ignore[attr-defined]
    events, state = when(state, cmd.DrainDelayElapsed(seconds=5.0, **META))
    assert [type(e) for e in events] == [ev.ListenerClosing]
    assert events[0].timeout == 20 and state.phase is Phase.CLOSING  # type: ignore[attr-defined]
    events, state = when(state, cmd.RecordListenerClosed(seconds=0.1, **META))
    assert [type(e) for e in events] == [ev.ListenerClosed]
    events, state = when(state, cmd.RequestsDrained(abandoned=0, seconds=1.5, **META))
    assert [type(e) for e in events] == [ev.Drained, ev.HooksStarted]
    assert events[1].hooks_timeout == 4 and state.phase is Phase.HOOKS  # type: ignore[attr-defined]
    later = {**META, "at": 1010.0}
    events, state = when(state, cmd.HooksFinished(seconds=0.25, **later))
    (stopped,) = events
    assert isinstance(stopped, ev.Stopped) and stopped.exit_code == 0
    assert dict(stopped.phase_durations) == {
        "drain_delay": 5.0,
        "close_listener": 0.1,
        "drain": 1.5,
        "hooks": 0.25,
        "total": 10.0,
    }
    assert state.phase is Phase.STOPPED and state.exit_code == 0


def test_requests_left_at_the_deadline_make_the_exit_code_1() -> None:
    state = given(*READY, TERM, cmd.DrainDelayElapsed(seconds=5, **META))
    events, state = when(state, cmd.RequestsDrained(abandoned=3, seconds=20, **META))
    assert isinstance(events[0], ev.DrainTimedOut) and events[0].abandoned == 3
    events, _ = when(state, cmd.HooksFinished(failures=(("db", "hung"),), **META))
    assert [type(e) for e in events] == [ev.HookFailed, ev.Stopped]
    assert events[1].exit_code == 1  # type: ignore[attr-defined]


def test_a_stop_during_start_up_skips_the_drain_delay_and_exits_0() -> None:
    state = given(config(SHUTDOWN))
    events, state = when(state, TERM)
    assert events[1].drain_delay == 0  # type: ignore[attr-defined]
    assert decide(cmd.MarkReady(**META), state) == []
    # start-up then fails (an unreachable backend): the shutdown goes on, not a failure
    assert decide(cmd.AbortStartup(reason="vault unreachable", **META), state) == []


def test_a_start_up_failure_before_any_signal_decides_its_exit_code() -> None:
    (config_error,) = decide(cmd.AbortStartup(reason="x", cause="config", **META), RuntimeState())
    (runtime_error,) = decide(cmd.AbortStartup(reason="port in use", **META), RuntimeState())
    assert isinstance(config_error, ev.StartupFailed) and config_error.exit_code == 2
    assert isinstance(runtime_error, ev.StartupFailed) and runtime_error.exit_code == 1


def test_a_second_signal_in_any_shutdown_step_forces_128_plus_signum() -> None:
    draining = given(*READY, TERM)
    closing = given(*READY, TERM, cmd.DrainDelayElapsed(seconds=5, **META))
    for state in (draining, closing):
        (forced,) = decide(cmd.RequestShutdown(signal="SIGINT", **META), state)
        assert isinstance(forced, ev.ShutdownForced) and forced.exit_code == 130
    (term,) = decide(TERM, draining)
    assert term.exit_code == 143  # type: ignore[attr-defined]
    after = reduce(evolve, [term], draining)
    assert after.phase is Phase.STOPPED and decide(TERM, after) == []


def test_late_reports_after_a_forced_exit_decide_nothing() -> None:
    state = given(*READY, TERM, cmd.RequestShutdown(signal="SIGINT", **META))
    assert decide(cmd.DrainDelayElapsed(seconds=5, **META), state) == []
    assert decide(cmd.HooksFinished(**META), state) == []
