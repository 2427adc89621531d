"""Hot reload in the service layer: subscriptions, the reloader and the runtime's config effects."""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.domain import events as ev
from mira.domain.commands import ApplyConfig, SecretFailure, SecretFetch
from mira.domain.config.loading import load_settings
from mira.domain.config.model import LoggingSettings, ReloadSettings, Settings
from mira.domain.secret_value import MASK
from mira.domain.state import RuntimeState
from mira.service_layer.bus import MessageBus
from mira.service_layer.config_effects import ConfigEffects
from mira.service_layer.config_reload import MAX_POLL_INTERVAL, ConfigReloader
from mira.service_layer.config_subscriptions import ConfigSubscriptions
from mira.service_layer.runtime import Runtime
from mira.service_layer.secret_cache import SecretCache
from mira.service_layer.secret_fetch import SecretFetcher, SecretStaging
from mira.service_layer.secrets import SecretsManager
from mira.service_layer.shutdown import ShutdownHooks
from mira.testing import FakeClock, InMemorySecretsBackend, RecordingJournal, SequentialIds


def settings(data: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    result = load_settings(json.dumps(data), "config.json", environ or {})
    assert result.settings is not None, result.errors
    return result.settings


class FakeWatcher:
    """Records how the reloader drives it."""

    def __init__(self, path: str, on_change: Any, **options: Any) -> None:
        self.path, self.on_change, self.options = path, on_change, options
        self.calls: list[tuple[str, Any]] = []

    def start(self) -> None:
        self.calls.append(("start", None))

    def stop(self, timeout: float = 2.0) -> None:
        self.calls.append(("stop", timeout))

    def set_poll_interval(self, seconds: float) -> None:
        self.calls.append(("poll", seconds))

    def check_now(self) -> None:
        self.calls.append(("check", None))


class Snap:
    def __init__(self, text: str | None, error: str | None = None, digest: str = "d1") -> None:
        self.path, self.text, self.error, self.digest = "config.json", text, error, digest


class Harness:
    """A reloader with fake watcher, clock and ids; submitted commands are recorded."""

    def __init__(self, environ: dict[str, str] | None = None, stage: Any = None) -> None:
        self.watchers: list[FakeWatcher] = []
        self.commands: list[ApplyConfig] = []
        self.subscriptions = ConfigSubscriptions()
        self.reloader = ConfigReloader(
            "config.json",
            self._submit,
            FakeClock(),
            SequentialIds(),
            environ or {},
            self.subscriptions,
            self._factory,
            stage=stage,
        )
        self.result: Future[list[ev.Event]] = Future()

    def _submit(self, command: ApplyConfig) -> Future[list[ev.Event]]:
        self.commands.append(command)
        return self.result

    def _factory(self, path: str, on_change: Any, **options: Any) -> FakeWatcher:
        watcher = FakeWatcher(path, on_change, **options)
        self.watchers.append(watcher)
        return watcher


# -- subscriptions ---------------------------------------------------------------------------
def test_reload_callback_gets_the_new_config_as_a_dict_with_secrets_masked() -> None:
    subs = ConfigSubscriptions()
    seen: list[dict[str, Any]] = []
    subs.register_reload_callback(seen.append)
    new = settings({"logging": {"level": "DEBUG"}, "integrations": {"github": {"token": "ghp_x1"}}})
    subs.notify(("logging.level",), new)
    assert seen[0]["logging"]["level"] == "DEBUG"
    assert seen[0]["integrations"]["github"]["token"] == MASK
    assert "ghp_x1" not in json.dumps(seen)


def test_key_subscribers_run_only_for_their_keys() -> None:
    subs = ConfigSubscriptions()
    calls: list[tuple[str, Any]] = []
    subs.subscribe("logging.level", lambda v: calls.append(("level", v)))
    subs.subscribe("logging", lambda v: calls.append(("logging", v["json_format"])))
    subs.subscribe("integrations", lambda v: calls.append(("integrations", v)))
    subs.notify(("logging.json_format",), settings({"logging": {"json_format": False}}))
    assert calls == [("logging", False)]
    calls.clear()
    subs.notify(("logging.level",), settings({"logging": {"level": "ERROR"}}))
    assert calls == [("level", "ERROR"), ("logging", True)]


def test_a_failing_callback_is_logged_and_the_others_still_run() -> None:
    subs = ConfigSubscriptions()
    seen: list[str] = []

    def broken(config: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    subs.register_reload_callback(broken)
    subs.register_reload_callback(lambda c: seen.append(c["logging"]["level"]))
    subs.subscribe("logging.level", seen.append)
    with capture_logs() as logs:
        subs.notify(("logging.level",), settings({"logging": {"level": "WARNING"}}))
    assert seen == ["WARNING", "WARNING"]
    failure = [x for x in logs if x["event"] == "Configuration callback failed"]
    assert failure and failure[0]["exc_info"] is True and "broken" in failure[0]["callback"]


def test_one_callback_mutating_its_dict_does_not_change_what_the_next_one_sees() -> None:
    subs = ConfigSubscriptions()
    seen: list[str] = []
    subs.register_reload_callback(lambda c: c["logging"].update(level="MUTATED"))
    subs.register_reload_callback(lambda c: seen.append(c["logging"]["level"]))
    subs.notify(("logging.level",), settings({"logging": {"level": "ERROR"}}))
    assert seen == ["ERROR"]


def test_bad_subscriptions_are_refused_with_a_clear_error() -> None:
    subs = ConfigSubscriptions()
    with pytest.raises(ValueError, match="dotted key"):
        subs.subscribe("", print)
    with pytest.raises(TypeError, match="callable"):
        subs.subscribe("logging.level", "not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        subs.register_reload_callback(None)  # type: ignore[arg-type]


# -- the reloader ----------------------------------------------------------------------------
def test_a_snapshot_is_parsed_once_into_one_apply_config_with_the_environment() -> None:
    h = Harness(environ={"MIRA_LOG_LEVEL": "DEBUG"})
    h.reloader.on_snapshot(Snap('{"logging": {"level": "ERROR", "json_format": false}}'))
    (command,) = h.commands
    assert command.parsed.settings is not None and command.correlation_id == "id-1"
    assert command.parsed.settings.logging.level == "DEBUG"  # the environment on top
    assert command.parsed.settings.logging.json_format is False


GH_REF = json.dumps({"integrations": {"github": {"token": "secret://gh:token"}}})


def test_unresolvable_secret_references_travel_with_the_command() -> None:
    failure = SecretFailure("gh", "secret gh does not exist", 4, ("secret://gh:token",))
    h = Harness(stage=lambda s: ((), (failure,)))
    command = h.reloader.command_for(Snap(GH_REF))
    assert command.failures == (failure,) and command.fetches == ()


def test_staged_reads_travel_with_the_command_and_no_value_does() -> None:
    fetch = SecretFetch("gh", "fp-1", "7", 3)
    h = Harness(stage=lambda s: ((fetch,), ()))
    command = h.reloader.command_for(Snap(GH_REF))
    assert command.fetches == (fetch,)


def test_references_are_staged_however_they_are_spelled_and_only_when_present() -> None:
    asked: list[Settings] = []

    def stage(settings: Settings) -> tuple[tuple[SecretFetch, ...], tuple[SecretFailure, ...]]:
        asked.append(settings)
        return (), ()

    h = Harness(stage=stage)
    h.reloader.command_for(Snap(r'{"integrations": {"jira": {"api_token": "secret:\/\/j:t"}}}'))
    h.reloader.command_for(Snap(r'{"integrations": {"jira": {"url": "\u0073ecret://j:t"}}}'))
    assert len(asked) == 2
    plain = Harness(stage=stage)
    plain.reloader.command_for(Snap('{"logging": {"level": "ERROR"}}'))
    assert len(asked) == 2  # nothing can be a reference: no backend call
    env_only = Harness(environ={"GITHUB_TOKEN": "secret://env-gh:token"}, stage=stage)
    env_only.reloader.command_for(Snap("{}"))
    assert asked[-1].integrations.github.token == "secret://env-gh:token"


def test_a_crashing_stager_becomes_a_reason_not_a_lost_change() -> None:
    def explode(s: Settings) -> Any:
        raise ConnectionError("backend gone")

    h = Harness(stage=explode)
    with capture_logs():
        h.reloader.on_snapshot(Snap('{"integrations": {"jira": {"api_token": "secret://j:t"}}}'))
    (command,) = h.commands
    assert [f.reason for f in command.failures] == ["could not be resolved: ConnectionError"]


def test_an_unreadable_file_is_submitted_with_its_reason() -> None:
    h = Harness(stage=lambda s: pytest.fail("nothing to stage"))
    h.reloader.on_snapshot(Snap(None, error="permission denied reading config file 'c'"))
    assert h.commands[0].parsed.errors == ("permission denied reading config file 'c'",)


def test_a_bus_that_refuses_the_command_is_logged() -> None:
    h = Harness()
    with capture_logs() as logs:
        h.reloader.on_snapshot(Snap("{}"))
        h.result.set_exception(RuntimeError("the message bus is not running"))
    assert any("could not be handed to the bus" in x["event"] for x in logs)


def test_start_watches_only_with_hot_reload_on() -> None:
    h = Harness()
    h.reloader.start(ReloadSettings(hot_reload=False))
    assert h.watchers == [] and not h.reloader.watching
    h.reloader.start(ReloadSettings(hot_reload=True, poll_interval=2.5), initial_digest="abc")
    (watcher,) = h.watchers
    assert watcher.calls == [("start", None)] and h.reloader.watching
    assert watcher.options == {"poll_interval": 2.5, "debounce": 0.05, "initial_digest": "abc"}


def test_reconfigure_turns_watching_off_changes_the_interval_and_restarts_for_debounce() -> None:
    h = Harness()
    h.reloader.start(ReloadSettings(hot_reload=True), initial_digest="d0")
    h.reloader.reconfigure(ReloadSettings(hot_reload=True, poll_interval=1.0))
    assert h.watchers[0].calls[-1] == ("poll", 1.0)
    h.reloader.on_snapshot(Snap("{}", digest="d7"))
    h.reloader.reconfigure(ReloadSettings(hot_reload=True, debounce=0.2))
    assert h.watchers[0].calls[-1][0] == "stop"
    assert h.watchers[1].options["debounce"] == 0.2
    assert h.watchers[1].options["initial_digest"] == "d7"  # no re-report of the applied file
    h.reloader.reconfigure(ReloadSettings(hot_reload=False))
    assert h.watchers[1].calls[-1][0] == "stop" and not h.reloader.watching


def test_a_poll_interval_beyond_what_a_thread_can_wait_is_capped_with_a_warning() -> None:
    h = Harness()
    with capture_logs() as logs:
        h.reloader.start(ReloadSettings(hot_reload=True, poll_interval=1e300))
    assert h.watchers[0].options["poll_interval"] == MAX_POLL_INTERVAL
    assert any("too long" in x["event"] for x in logs)


# -- the runtime's effects -------------------------------------------------------------------
class RuntimeHarness:
    """A Runtime on an inline bus: ApplyConfig commands run the real effect handlers."""

    def __init__(self, initial: dict[str, Any], fail_logging: bool = False) -> None:
        self.logging: list[LoggingSettings] = []
        self.fail_logging = fail_logging
        self.journal = RecordingJournal()
        self.bus = MessageBus(self.journal)
        fetcher = SecretFetcher(InMemorySecretsBackend(), SecretStaging())
        secrets = SecretsManager(fetcher, SecretCache(), self.bus, FakeClock(), SequentialIds())
        self.h = Harness(stage=secrets.stage)
        self.runtime = Runtime(
            bus=self.bus,
            secrets=secrets,
            reloader=self.h.reloader,
            hooks=ShutdownHooks(),
            config_effects=ConfigEffects(
                self.h.reloader, self._apply_logging, self.bus.current_state
            ),
            server_factory=lambda: pytest.fail("no server in unit tests"),
            clock=FakeClock(),
            ids=SequentialIds("r"),
        )
        self.apply(initial)
        self.h.reloader.start(settings(initial).config)

    def _apply_logging(self, s: LoggingSettings) -> None:
        self.logging.append(s)
        if self.fail_logging:
            raise OSError(13, "cannot open log file /root/x.log: Permission denied")

    def apply(self, data: dict[str, Any] | None, text: str | None = None) -> list[ev.Event]:
        body = json.dumps(data) if text is None else text
        command = self.h.reloader.command_for(Snap(body))
        return self.bus.process_inline(command)


def test_a_change_applies_logging_live_logs_success_and_notifies() -> None:
    rt = RuntimeHarness({"config": {"hot_reload": True}})
    seen: list[dict[str, Any]] = []
    rt.h.reloader.register_reload_callback(seen.append)
    with capture_logs() as logs:
        rt.apply({"config": {"hot_reload": True}, "logging": {"level": "DEBUG"}})
    assert rt.logging[-1].level == "DEBUG"
    ok = [x for x in logs if x["event"] == "Configuration reloaded successfully"]
    assert ok[0]["changed_keys"] == ["logging.level"] and ok[0]["generation"] == 2
    assert seen[0]["logging"]["level"] == "DEBUG"


def test_restart_required_keys_are_warned_about_and_applied_to_nothing() -> None:
    rt = RuntimeHarness({"server": {"port": 8000}})
    seen: list[Any] = []
    rt.h.reloader.subscribe("server", seen.append)
    with capture_logs() as logs:
        (event,) = rt.apply({"server": {"port": 9000}})
    assert isinstance(event, ev.ConfigNeedsRestart) and event.restart_required == ("server.port",)
    assert rt.bus.state.config_generation == 1
    warning = [x for x in logs if x["log_level"] == "warning"]
    assert "restart required" in warning[0]["event"]
    assert warning[0]["restart_required"] == ["server.port"]
    assert rt.bus.state.settings is not None and rt.bus.state.settings.server.port == 8000
    assert seen == [] and not any("successfully" in x["event"] for x in logs)


def test_a_failing_effect_stops_neither_the_other_effects_nor_the_callbacks() -> None:
    rt = RuntimeHarness({"config": {"hot_reload": True}}, fail_logging=True)
    seen: list[Any] = []
    rt.h.reloader.subscribe("config.poll_interval", seen.append)
    with capture_logs() as logs:
        rt.apply({"config": {"hot_reload": True, "poll_interval": 1}, "logging": {"file": "/x"}})
    assert seen == [1.0] and rt.h.watchers[0].calls[-1] == ("poll", 1.0)
    failed = [x for x in logs if x["event"] == "Could not apply the new configuration"]
    assert failed[0]["area"] == "logging" and failed[0]["exc_info"] is True
    ok = [x for x in logs if x["event"] == "Configuration reloaded successfully"]
    assert ok[0]["failed_effects"] == ["logging"]


def test_a_rejected_file_is_logged_at_error_with_reasons_and_the_old_config_stays() -> None:
    rt = RuntimeHarness({"logging": {"level": "WARNING"}})
    with capture_logs() as logs:
        (event,) = rt.apply(None, text='{"logging": {"level": "WARNING"')
    assert isinstance(event, ev.ConfigRejected)
    (line,) = [x for x in logs if x["log_level"] == "error"]
    assert line["event"] == "Configuration rejected; keeping the last good configuration"
    assert "invalid JSON at line 1, column" in line["reasons"][0] and line["generation"] == 1
    assert rt.bus.state.settings is not None and rt.bus.state.settings.logging.level == "WARNING"
    assert event in rt.journal.events


def test_a_rotation_redelivers_the_keys_that_reference_it_but_not_the_whole_config() -> None:
    live = settings({"integrations": {"github": {"token": "secret://gh:token"}}})
    h = Harness()
    whole: list[Any] = []
    keyed: list[Any] = []
    h.reloader.register_reload_callback(whole.append)
    h.reloader.subscribe("integrations.github", keyed.append)
    state = RuntimeState(settings=live, config_generation=1)
    effects = ConfigEffects(h.reloader, lambda s: None, lambda: state)
    rotated = ev.SecretRotated(
        correlation_id="c",
        at=1.0,
        secret="gh",
        fingerprint="new",
        previous_fingerprint="old",
        version=None,
        backend="memory",
        seq=2,
    )
    with capture_logs():
        effects.on_secret_rotated(rotated)
    assert whole == []  # the config did not change: whole-config callbacks stay quiet
    assert len(keyed) == 1 and keyed[0]["token"] == "secret://gh:token"  # never the value
