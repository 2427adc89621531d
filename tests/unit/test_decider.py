"""The decider: given a state (folded from events), when a command, then events."""

from __future__ import annotations

import json
from functools import reduce
from typing import Any

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import LoadResult, load_settings
from mira.domain.decider import decide
from mira.domain.state import RuntimeState, evolve

META: dict[str, Any] = {"correlation_id": "c-1", "at": 1000.0}
GH = {"integrations": {"github": {"token": "secret://gh:token"}}}


def apply_config(data: object | None, text: str | None = None, **kw: Any) -> cmd.ApplyConfig:
    body = text if text is not None else json.dumps(data)
    parsed = load_settings(body, "config.json", {})
    return cmd.ApplyConfig(source="config.json", parsed=parsed, **META, **kw)


def given(*commands: cmd.Command) -> RuntimeState:
    state = RuntimeState()
    for command in commands:
        state = reduce(evolve, decide(command, state), state)
    return state


def fetch(fp: str, seq: int, name: str = "gh", at: float = 1000.0) -> cmd.RecordSecretFetch:
    return cmd.RecordSecretFetch(
        fetch=cmd.SecretFetch(name, fp, None, seq), backend="vault", correlation_id="c", at=at
    )


def fail(seq: int, name: str = "gh") -> cmd.RecordSecretFailure:
    failure = cmd.SecretFailure(name, "unreachable", seq, (f"secret://{name}:token",))
    return cmd.RecordSecretFailure(failure=failure, backend="vault", **META)


# -- configuration ---------------------------------------------------------------------------
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
    unreadable = LoadResult(None, ("c.json: permission denied",))
    (event,) = decide(cmd.ApplyConfig(source="c.json", parsed=unreadable, **META), state)
    assert isinstance(event, ev.ConfigRejected)
    assert event.reasons == ("c.json: permission denied",)


def test_unresolved_secret_reference_rejects_naming_the_reference() -> None:
    state = given(apply_config({}))
    failure = cmd.SecretFailure("gh", "SecretNotFound", 3, ("secret://gh:token",))
    (event,) = decide(apply_config(GH, failures=(failure,)), state)
    assert isinstance(event, ev.ConfigRejected)
    assert "secret://gh:token: SecretNotFound" in event.reasons[0]


def test_a_problem_found_before_applying_rejects_the_config() -> None:
    state = given(apply_config({}))
    problem = "logging.file: cannot write /dev/full: No space left on device"
    (event,) = decide(apply_config({"logging": {"file": "/dev/full"}}, problems=(problem,)), state)
    assert isinstance(event, ev.ConfigRejected) and problem in event.reasons[0]


def test_server_change_needs_a_restart_and_is_not_applied() -> None:
    state = given(apply_config({"server": {"port": 5000}}))
    (event,) = decide(
        apply_config({"server": {"port": 6000}, "logging": {"level": "DEBUG"}}), state
    )
    assert isinstance(event, ev.ConfigChanged)
    assert event.restart_required == ("server.port",)
    assert event.settings.server.port == 5000  # the live server keeps its address
    assert event.settings.logging.level == "DEBUG"


def test_a_restart_only_change_does_not_advance_the_generation() -> None:
    state = given(apply_config({"server": {"port": 5000}}))
    events = decide(apply_config({"server": {"port": 6000}}), state)
    assert [type(e) for e in events] == [ev.ConfigNeedsRestart]
    after = reduce(evolve, events, state)
    assert after.config_generation == 1 and after.settings == state.settings


def test_secrets_backend_change_is_reported_as_restart_required_and_not_applied() -> None:
    state = given(apply_config({}))
    (event,) = decide(apply_config({"secrets": {"backend": "vault", "auto_refresh": True}}), state)
    assert isinstance(event, ev.ConfigChanged)
    assert event.restart_required == ("secrets.backend",)
    assert event.settings.secrets.backend == "env"
    assert event.settings.secrets.auto_refresh is True


def test_restoring_the_live_content_after_a_rejection_clears_the_error() -> None:
    state = given(
        apply_config({"logging": {"level": "INFO"}}),
        apply_config({"logging": 5}),
        apply_config({"logging": {"level": "INFO"}}),
    )
    assert state.last_config_error == () and state.config_generation == 1


# -- secrets ---------------------------------------------------------------------------------
def test_secrets_of_an_accepted_config_are_promoted_before_the_config_changes() -> None:
    state = given(apply_config({}))
    staged = cmd.SecretFetch("gh", "aaa", "3", seq=7)
    events = decide(apply_config(GH, fetches=(staged,)), state)
    assert [type(e) for e in events] == [ev.SecretLoaded, ev.ConfigChanged]
    assert events[0].seq == 7  # type: ignore[attr-defined]


def test_a_rejected_config_discards_its_staged_secrets_and_tracks_none_of_them() -> None:
    state = given(apply_config({}))
    staged = cmd.SecretFetch("gh", "aaa", None, seq=7)
    bad = {**GH, "logging": {"level": "LOUD"}}
    events = decide(apply_config(bad, fetches=(staged,)), state)
    assert [type(e) for e in events] == [ev.ConfigRejected, ev.SecretFetchDiscarded]
    assert reduce(evolve, events, state).secrets == {}


def test_secret_fetches_load_then_rotate_only_on_a_new_fingerprint() -> None:
    state = given(apply_config(GH))
    (loaded,) = decide(fetch("aaa", 1), state)
    assert isinstance(loaded, ev.SecretLoaded)
    state = evolve(state, loaded)
    (again,) = decide(fetch("aaa", 2), state)
    assert isinstance(again, ev.SecretRefreshed)  # fresh again, not a rotation
    (rotated,) = decide(fetch("bbb", 3), state)
    assert isinstance(rotated, ev.SecretRotated) and rotated.previous_fingerprint == "aaa"


def test_an_out_of_order_fetch_cannot_roll_a_rotation_back() -> None:
    # given: read #1 (old value) started first and is slow; read #2 saw the rotated value
    state = given(apply_config(GH), fetch("old", 0), fetch("new", 2))
    assert state.secrets["gh"].fingerprint == "new"
    # when: the slow read #1 finishes last
    (event,) = decide(fetch("old", 1), state)
    # then: it is discarded, the rotated value stays in use
    assert isinstance(event, ev.SecretFetchDiscarded) and event.seq == 1
    assert reduce(evolve, [event], state).secrets["gh"].fingerprint == "new"


def test_a_fetch_of_a_secret_the_live_config_does_not_reference_is_discarded() -> None:
    state = given(apply_config({}))
    (event,) = decide(fetch("aaa", 1, name="other"), state)
    assert isinstance(event, ev.SecretFetchDiscarded)
    assert decide(fail(2, name="other"), state) == []


def test_refresh_failures_count_up_and_keep_the_status() -> None:
    state = given(apply_config(GH), fetch("a", 1), fail(2), fail(3))
    assert state.secrets["gh"].failures == 2
    assert state.secrets["gh"].fingerprint == "a"


def test_a_failure_older_than_the_value_in_use_is_ignored() -> None:
    state = given(apply_config(GH), fetch("a", 5))
    assert decide(fail(4), state) == []


def test_an_unchanged_fetch_refreshes_the_age_of_the_secret() -> None:
    state = given(apply_config(GH), fetch("a", 1))
    state = reduce(evolve, decide(fetch("a", 2, at=5000.0), state), state)
    assert state.secrets["gh"].fetched_at == 5000.0


def test_a_reload_that_drops_a_reference_stops_tracking_its_secret() -> None:
    state = given(apply_config(GH), fetch("a", 1))
    state = given(apply_config(GH), fetch("a", 1), apply_config({"logging": {"level": "DEBUG"}}))
    assert "gh" not in state.secrets
