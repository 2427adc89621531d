"""SecretsManager with the in-memory backend and the real decider (bus processed inline)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.domain import events as ev
from mira.domain.config.model import GithubSettings, IntegrationsSettings, SecretsSettings, Settings
from mira.domain.readiness import readiness
from mira.domain.state import Phase
from mira.service_layer.bus import MessageBus
from mira.service_layer.secrets import SecretsManager, next_delay
from mira.testing import FakeClock, InMemorySecretsBackend, RecordingJournal, SequentialIds

TOKEN, ROTATED = "ghp_unit-token-1", "ghp_unit-token-2"
SETTINGS = Settings(
    integrations=IntegrationsSettings(
        github=GithubSettings(token="secret://github-credentials:token")
    )
)


class Harness:
    def __init__(self) -> None:
        self.backend = InMemorySecretsBackend({"github-credentials": {"token": TOKEN}})
        self.journal = RecordingJournal()
        self.bus = MessageBus(self.journal)
        self.clock = FakeClock()
        self.redacted: list[str] = []
        self.manager = SecretsManager(
            self.backend,
            self.bus.process_inline,
            self.clock,
            SequentialIds(),
            on_values=lambda values: self.redacted.__setitem__(slice(None), list(values)),
        )
        self.bus.subscribe(ev.SecretRotated, self.manager.on_rotated)

    def events(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.journal.events if isinstance(e, kind)]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    assert harness.manager.resolve(SETTINGS) == []
    return harness


def test_get_returns_a_masked_value_and_literals_pass_through(h: Harness) -> None:
    value = h.manager.get("secret://github-credentials:token")
    assert value is not None and value.reveal() == TOKEN
    assert TOKEN not in f"{value} {value!r}"
    assert h.manager.get("plain-literal").reveal() == "plain-literal"  # type: ignore[union-attr]
    assert h.manager.get("secret://unknown:key") is None
    assert h.manager.get(None) is None


def test_missing_secret_is_reported_with_its_reference_and_no_value(h: Harness) -> None:
    settings = replace(
        SETTINGS,
        integrations=IntegrationsSettings(github=GithubSettings(token="secret://nope:token")),
    )
    [(ref, reason)] = h.manager.resolve(settings)
    assert ref == "secret://nope:token" and "nope" in reason and TOKEN not in reason


def test_failure_keeps_the_cached_value_and_journals_refresh_failed(h: Harness) -> None:
    h.backend.fail()
    assert h.manager.refresh() is False
    assert h.manager.get("secret://github-credentials:token").reveal() == TOKEN  # type: ignore[union-attr]
    [failed] = h.events(ev.SecretRefreshFailed)
    assert failed.secret == "github-credentials" and failed.consecutive_failures == 1
    h.bus._state = h.bus._published = replace(h.bus.state, phase=Phase.READY, settings=SETTINGS)
    ok, body = readiness(h.bus.state, h.clock.now() + 5)
    assert body["secrets"]["github-credentials"]["state"] == "stale"
    assert ok  # stale_makes_unready defaults to false


def test_stale_makes_unready_when_configured(h: Harness) -> None:
    h.backend.fail()
    h.manager.refresh()
    strict = replace(SETTINGS, secrets=SecretsSettings(stale_makes_unready=True))
    h.bus._state = h.bus._published = replace(h.bus.state, phase=Phase.READY, settings=strict)
    ok, body = readiness(h.bus.state, h.clock.now())
    assert not ok and body["reasons"] == ["secret github-credentials is stale"]


def test_rotation_calls_every_callback_and_a_failing_one_is_isolated(h: Harness) -> None:
    got: list[Any] = []

    def broken(new_value: Any) -> None:
        raise RuntimeError("boom")

    h.manager.register_refresh_callback("github-credentials", broken)
    h.manager.register_refresh_callback("github-credentials", got.append)
    h.backend.set("github-credentials", {"token": ROTATED})
    with capture_logs() as logs:
        assert h.manager.refresh() is True
    assert [v["token"].reveal() for v in got] == [ROTATED]
    assert ROTATED not in str(got)
    [rotated] = h.events(ev.SecretRotated)
    assert rotated.version == "2" and ROTATED not in repr(rotated)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "Secret refresh callback failed"
    ]


def test_unchanged_refresh_does_not_rotate(h: Harness) -> None:
    got: list[Any] = []
    h.manager.register_refresh_callback("github-credentials", got.append)
    assert h.manager.refresh() is True
    assert got == [] and h.events(ev.SecretRotated) == []


def test_rotated_out_values_stay_in_the_redaction_set(h: Harness) -> None:
    h.backend.set("github-credentials", {"token": ROTATED})
    h.manager.refresh()
    assert set(h.redacted) == {TOKEN, ROTATED}


def test_pushed_change_refreshes_only_that_secret(h: Harness) -> None:
    h.manager.start(SecretsSettings())
    try:
        h.backend.calls.clear()
        h.backend.set("github-credentials", {"token": ROTATED})  # notifies the watcher
        assert h.backend.calls == [("github-credentials", "token")]
        assert h.manager.get("secret://github-credentials:token").reveal() == ROTATED  # type: ignore[union-attr]
    finally:
        h.manager.stop()


def test_delay_has_ten_percent_jitter_and_a_capped_backoff() -> None:
    s = SecretsSettings(refresh_interval=100.0, max_backoff=8.0)
    delays = [next_delay(s, 0) for _ in range(500)]
    assert 90.0 <= min(delays) < 92.0 and 108.0 < max(delays) <= 110.0
    assert [next_delay(s, n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    short = SecretsSettings(refresh_interval=1.5, max_backoff=300.0)
    assert next_delay(short, 10) == 1.5  # recovery is noticed within one interval
    assert next_delay(short, 10_000) == 1.5
