"""SecretsManager with the in-memory backend and the real decider (bus processed inline)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import LoadResult
from mira.domain.config.model import GithubSettings, IntegrationsSettings, SecretsSettings, Settings
from mira.domain.config.secret_refs import SecretRef
from mira.domain.ports import SecretsBackend
from mira.domain.readiness import readiness
from mira.domain.state import Phase
from mira.service_layer.bus import MessageBus
from mira.service_layer.secret_cache import SecretCache
from mira.service_layer.secret_fetch import SecretFetcher, SecretStaging, as_text
from mira.service_layer.secrets import SecretsManager, next_delay
from mira.testing import FakeClock, InMemorySecretsBackend, RecordingJournal, SequentialIds

TOKEN, ROTATED = "ghp_unit-token-1", "ghp_unit-token-2"
REF = "secret://github-credentials:token"
SETTINGS = Settings(
    integrations=IntegrationsSettings(github=GithubSettings(token=REF)),
    secrets=SecretsSettings(auto_refresh=False),
)


class Harness:
    def __init__(self) -> None:
        self.backend = InMemorySecretsBackend({"github-credentials": {"token": TOKEN}})
        self.journal = RecordingJournal()
        self.bus = MessageBus(self.journal, inline=True)
        self.clock = FakeClock()
        self.redacted: list[str] = []
        self.cache = SecretCache(lambda values: self.redacted.__setitem__(slice(None), values))
        self.fetcher = SecretFetcher(self.backend, SecretStaging())
        self.manager = SecretsManager(
            self.fetcher, self.cache, self.bus, self.clock, SequentialIds()
        )
        self.bus.subscribe(ev.SecretPromoted, self.manager.on_promoted)
        self.bus.subscribe(ev.SecretFetchDiscarded, self.manager.on_discarded)
        self.bus.subscribe(ev.ConfigLoaded, self.manager.on_config)
        self.bus.subscribe(ev.ConfigChanged, self.manager.on_config)
        self.bus.subscribe(ev.SecretRotated, self.manager.on_rotated)

    def apply(self, settings: Settings) -> list[ev.Event]:
        fetches, failures = self.manager.stage(settings)
        command = cmd.ApplyConfig(
            correlation_id="c",
            at=self.clock.now(),
            source="config.json",
            parsed=LoadResult(settings, ()),
            fetches=fetches,
            failures=failures,
            backend="memory",
        )
        return self.bus.handle(command)

    def events(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.journal.events if isinstance(e, kind)]

    def value(self) -> str:
        value = self.manager.get(REF)
        assert value is not None
        return value.reveal()


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    assert [type(e) for e in harness.apply(SETTINGS)] == [ev.SecretLoaded, ev.ConfigLoaded]
    return harness


def test_get_returns_a_masked_value_and_literals_pass_through(h: Harness) -> None:
    value = h.manager.get(REF)
    assert value is not None and value.reveal() == TOKEN
    assert TOKEN not in f"{value} {value!r}"
    assert h.manager.get("plain-literal").reveal() == "plain-literal"  # type: ignore[union-attr]
    assert h.manager.get("secret://unknown:key") is None
    assert h.manager.get(None) is None


def test_a_missing_secret_rejects_the_reload_and_is_never_tracked(h: Harness) -> None:
    settings = replace(
        SETTINGS,
        integrations=IntegrationsSettings(github=GithubSettings(token="secret://nope:token")),
    )
    (rejected,) = h.apply(settings)
    assert isinstance(rejected, ev.ConfigRejected)
    assert "secret://nope:token" in rejected.reasons[0] and TOKEN not in rejected.reasons[0]
    assert set(h.bus.state.secrets) == {"github-credentials"}  # no "missing" entry left
    assert h.value() == TOKEN


def test_failure_keeps_the_cached_value_and_journals_refresh_failed(h: Harness) -> None:
    h.backend.fail()
    assert h.manager.refresh() is False
    assert h.value() == TOKEN
    [failed] = h.events(ev.SecretRefreshFailed)
    assert failed.secret == "github-credentials" and failed.consecutive_failures == 1
    h.bus.process_inline(cmd.MarkReady(correlation_id="c", at=h.clock.now()))
    ok, body = readiness(h.bus.state, h.clock.now() + 5)
    assert body["secrets"]["github-credentials"]["state"] == "stale"
    assert ok  # stale_makes_unready defaults to false


def test_stale_makes_unready_when_configured(h: Harness) -> None:
    h.backend.fail()
    h.manager.refresh()
    strict = replace(SETTINGS, secrets=SecretsSettings(stale_makes_unready=True))
    state = replace(h.bus.state, phase=Phase.READY, settings=strict)
    ok, body = readiness(state, h.clock.now())
    assert not ok and body["reasons"] == ["secret github-credentials is stale"]


def test_rotation_calls_every_callback_and_a_failing_one_is_isolated(h: Harness) -> None:
    got: list[Any] = []

    def broken(new_value: Any) -> None:
        raise RuntimeError("boom")

    h.manager.register_refresh_callback("github-credentials", broken)
    h.manager.register_refresh_callback("github-credentials", got.append)
    h.backend.set("github-credentials", {"token": ROTATED}, notify=False)
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
    assert len(h.events(ev.SecretRefreshed)) == 1


def test_rotated_out_values_stay_in_the_redaction_set(h: Harness) -> None:
    h.backend.set("github-credentials", {"token": ROTATED}, notify=False)
    h.manager.refresh()
    assert set(h.redacted) == {TOKEN, ROTATED}


def test_pushed_change_refreshes_only_that_secret(h: Harness) -> None:
    h.manager.start(SETTINGS.secrets)
    try:
        h.backend.calls.clear()
        h.backend.set("github-credentials", {"token": ROTATED})  # notifies the watcher
        assert h.backend.calls == [("github-credentials", "token")]
        assert h.value() == ROTATED
    finally:
        h.manager.stop()


def test_a_slow_read_of_the_old_value_cannot_roll_a_rotation_back(h: Harness) -> None:
    # A refresh starts reading (its sequence number is taken), a push-triggered read of the
    # rotated value overtakes it; the slow read's old value arrives last.
    slow = h.fetcher.fetch([SecretRef("github-credentials", "token")], h.bus.state.secrets)
    h.backend.set("github-credentials", {"token": ROTATED}, notify=False)
    assert h.manager.refresh() is True and h.value() == ROTATED
    (late,) = slow.fetched
    events = h.bus.handle(cmd.RecordSecretFetch(correlation_id="c", at=1.0, fetch=late))
    assert [type(e) for e in events] == [ev.SecretFetchDiscarded]
    assert h.value() == ROTATED and len(h.fetcher.staging) == 0


def test_a_reload_that_drops_a_reference_forgets_its_value(h: Harness) -> None:
    (changed,) = h.apply(replace(SETTINGS, integrations=IntegrationsSettings()))
    assert isinstance(changed, ev.ConfigChanged)
    assert h.manager.get(REF) is None and h.bus.state.secrets == {}


class NoneBackend(SecretsBackend):
    def get_secret(self, path: str, key: str | None = None) -> Any:
        pass  # the guide's AWS snippet, as written


def test_a_backend_answer_that_is_not_a_value_is_named_in_the_error() -> None:
    ref = SecretRef("github-credentials", "token")
    outcome = SecretFetcher(NoneBackend(), SecretStaging()).fetch([ref], {})
    [failure] = outcome.failed
    assert failure.reason == "the backend returned None instead of a value"
    assert failure.references == ("secret://github-credentials:token",)
    with pytest.raises(Exception, match="without key 'token'"):
        as_text(ref, {"user": "x"})
    assert as_text(ref, {"token": "t", "user": "u"}) == "t"


def test_delay_has_ten_percent_jitter_and_a_capped_backoff() -> None:
    s = SecretsSettings(refresh_interval=100.0, max_backoff=8.0)
    delays = [next_delay(s, 0) for _ in range(500)]
    assert 90.0 <= min(delays) < 92.0 and 108.0 < max(delays) <= 110.0
    assert [next_delay(s, n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    short = SecretsSettings(refresh_interval=1.5, max_backoff=300.0)
    assert next_delay(short, 10) == 1.5  # recovery is noticed within one interval
    assert next_delay(short, 10_000) == 1.5
