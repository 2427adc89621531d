"""The decider: given a state (folded from events), when a command, then events."""

from __future__ import annotations

import json
from functools import reduce

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.decider import decide
from mira.domain.state import Phase, RuntimeState, evolve

META = {"correlation_id": "c-1", "at": 1000.0}


def apply_config(data: object | None, text: str | None = None, **kw: object) -> cmd.ApplyConfig:
    body = text if text is not None else json.dumps(data)
    return cmd.ApplyConfig(source="config.json", text=body, **META, **kw)  # type: ignore[arg-type]


def given(*commands: cmd.Command) -> RuntimeState:
    state = RuntimeState()
    for command in commands:
        state = reduce(evolve, decide(command, state), state)
    return state


def test_first_valid_config_is_loaded_as_generation_one() -> None:
    (event,) = decide(apply_config({"logging": {"level": "DEBUG"}}), RuntimeState())
    assert isinstance(event, ev.ConfigLoaded) and event.generation == 1
    assert event.settings.logging.level == "DEBUG"


def test_invalid_config_at_start_up_fails_the_start() -> None:
    (event,) = decide(apply_config(None, text="{"), RuntimeState())
    assert isinstance(event, ev.StartupFailed) and event.exit_code == 2
    assert "invalid JSON" in event.reasons[0]


def test_changed_config_reports_changed_keys_and_next_generation() -> None:
    state = given(apply_config({}))
    (event,) = decide(apply_config({"logging": {"level": "ERROR", "json_format": False}}), state)
    assert isinstance(event, ev.ConfigChanged)
    assert event.changed_keys == ("logging.json_format", "logging.level")
    assert event.generation == 2 and event.restart_required == ()


def test_same_content_changes_nothing() -> None:
    state = given(apply_config({"logging": {"level": "INFO"}}))
    assert [type(e) for e in decide(apply_config({}), state)] == [ev.ConfigUnchanged]


def test_rejected_config_keeps_the_last_good_one_live() -> None:
    state = given(apply_config({"logging": {"level": "WARNING"}}))
    events = decide(apply_config({"logging": {"level": "LOUD"}}), state)
    assert [type(e) for e in events] == [ev.ConfigRejected]
    after = reduce(evolve, events, state)
    assert after.settings is not None and after.settings.logging.level == "WARNING"
    assert after.config_generation == 1
    assert "logging.level" in after.last_config_error[0]


def test_unreadable_file_is_rejected_with_the_read_error() -> None:
    state = given(apply_config({}))
    (event,) = decide(
        cmd.ApplyConfig(source="c.json", text=None, read_error="c.json: permission denied", **META),
        state,
    )  # type: ignore[arg-type]
    assert isinstance(event, ev.ConfigRejected)
    assert event.reasons == ("c.json: permission denied",)


def test_unresolved_secret_reference_rejects_without_a_value() -> None:
    state = given(apply_config({}))
    (event,) = decide(
        apply_config({}, unresolved=(("secret://gh:token", "SecretNotFound"),)), state
    )
    assert isinstance(event, ev.ConfigRejected)
    assert "secret://gh:token" in event.reasons[0]


def test_server_change_needs_a_restart_and_is_not_applied() -> None:
    state = given(apply_config({"server": {"port": 5000}}))
    (event,) = decide(
        apply_config({"server": {"port": 6000}, "logging": {"level": "DEBUG"}}), state
    )
    assert isinstance(event, ev.ConfigChanged)
    assert event.restart_required == ("server.port",)
    assert event.settings.server.port == 5000  # the live server keeps its address
    assert event.settings.logging.level == "DEBUG"


def test_lifecycle_phases_starting_ready_draining_stopped() -> None:
    state = given(apply_config({}))
    assert state.phase is Phase.STARTING
    state = given(apply_config({}), cmd.MarkReady(**META))  # type: ignore[arg-type]
    assert state.phase is Phase.READY
    events = decide(cmd.RequestShutdown(signal="SIGTERM", **META), state)  # type: ignore[arg-type]
    assert [type(e) for e in events] == [ev.ShutdownRequested, ev.DrainStarted]
    state = reduce(evolve, events, state)
    assert state.phase is Phase.DRAINING
    (stopped,) = decide(cmd.RecordStopped(exit_code=0, **META), state)  # type: ignore[arg-type]
    assert reduce(evolve, [stopped], state).phase is Phase.STOPPED


def test_second_signal_during_drain_forces_the_exit() -> None:
    state = given(
        apply_config({}),
        cmd.MarkReady(**META),  # type: ignore[arg-type]
        cmd.RequestShutdown(signal="SIGTERM", **META),
    )  # type: ignore[arg-type]
    (event,) = decide(cmd.RequestShutdown(signal="SIGINT", **META), state)  # type: ignore[arg-type]
    assert isinstance(event, ev.ShutdownForced) and event.signal == "SIGINT"


def test_signal_during_start_up_drains_and_mark_ready_then_does_nothing() -> None:
    state = given(apply_config({}), cmd.RequestShutdown(signal="SIGTERM", **META))  # type: ignore[arg-type]
    assert state.phase is Phase.DRAINING
    assert decide(cmd.MarkReady(**META), state) == []  # type: ignore[arg-type]


def test_drain_result_is_drained_or_timed_out() -> None:
    state = RuntimeState()
    (ok,) = decide(cmd.RecordDrainResult(abandoned=0, duration=0.5, **META), state)  # type: ignore[arg-type]
    (late,) = decide(cmd.RecordDrainResult(abandoned=3, duration=25, **META), state)  # type: ignore[arg-type]
    assert isinstance(ok, ev.Drained)
    assert isinstance(late, ev.DrainTimedOut) and late.abandoned == 3


def test_secret_fetches_load_then_rotate_only_on_a_new_fingerprint() -> None:
    def fetch(fp: str) -> cmd.RecordSecretFetch:
        return cmd.RecordSecretFetch(name="gh", fingerprint=fp, backend="vault", **META)  # type: ignore[arg-type]

    state = RuntimeState()
    (loaded,) = decide(fetch("aaa"), state)
    assert isinstance(loaded, ev.SecretLoaded)
    state = evolve(state, loaded)
    (again,) = decide(fetch("aaa"), state)
    assert isinstance(again, ev.SecretRefreshed)  # fresh again, not a rotation
    (rotated,) = decide(fetch("bbb"), state)
    assert isinstance(rotated, ev.SecretRotated) and rotated.previous_fingerprint == "aaa"


def test_refresh_failures_count_up_and_keep_the_status() -> None:
    fail = cmd.RecordSecretFailure(name="gh", reason="unreachable", backend="vault", **META)  # type: ignore[arg-type]
    state = given(cmd.RecordSecretFetch(name="gh", fingerprint="a", **META), fail, fail)  # type: ignore[arg-type]
    assert state.secrets["gh"].failures == 2
    assert state.secrets["gh"].fingerprint == "a"


def test_an_unchanged_fetch_refreshes_the_age_of_the_secret() -> None:
    state = given(cmd.RecordSecretFetch(name="gh", fingerprint="a", **META))  # type: ignore[arg-type]
    later = cmd.RecordSecretFetch(name="gh", fingerprint="a", correlation_id="c", at=5000.0)
    state = reduce(evolve, decide(later, state), state)
    assert state.secrets["gh"].fetched_at == 5000.0


def test_secrets_backend_change_is_reported_as_restart_required_and_not_applied() -> None:
    state = given(apply_config({}))
    (event,) = decide(apply_config({"secrets": {"backend": "vault", "auto_refresh": True}}), state)
    assert isinstance(event, ev.ConfigChanged)
    assert event.restart_required == ("secrets.backend",)
    assert event.settings.secrets.backend == "env"
    assert event.settings.secrets.auto_refresh is True


def test_restoring_the_live_content_after_a_rejection_clears_the_error() -> None:
    state = given(apply_config({"logging": {"level": "INFO"}}), apply_config({"logging": 5}))
    assert state.last_config_error
    state = given(
        apply_config({"logging": {"level": "INFO"}}),
        apply_config({"logging": 5}),
        apply_config({"logging": {"level": "INFO"}}),
    )
    assert state.last_config_error == () and state.config_generation == 1
