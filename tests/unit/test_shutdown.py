"""The shutdown coordinator with fakes: drain order, hook order, hook timeouts and budget."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.adapters.signals import StopSignals
from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.loading import load_settings
from mira.domain.config.model import ShutdownSettings
from mira.domain.lifecycle import forced_exit_code
from mira.service_layer.bus import MessageBus
from mira.service_layer.shutdown import ShutdownEffects, ShutdownHooks
from mira.testing import FakeClock, RecordingJournal

META: dict[str, Any] = {"correlation_id": "c", "at": 1000.0}


@dataclass
class FakeServer:
    clock: FakeClock
    abandoned: int = 0
    drain_takes: float = 0.5
    calls: list[str] = field(default_factory=list)

    def start_draining(self) -> None:
        self.calls.append("start_draining")

    def close_listener(self) -> None:
        self.calls.append("close_listener")

    def wait_drained(self, timeout: float) -> int:
        self.calls.append(f"wait_drained({timeout:g})")
        self.clock.advance(timeout if self.abandoned else self.drain_takes)
        return self.abandoned

    def stop(self, timeout: float = 5.0) -> None:
        self.calls.append(f"stop({timeout:g})")

    @property
    def in_flight(self) -> int:
        return self.abandoned


class FakeHook:
    """A hook that takes `takes` seconds of fake time, then returns or raises `error`."""

    def __init__(self, ran: list[str], name: str, takes: float = 0.0, error: str = "") -> None:
        self.ran, self.name, self.takes, self.error = ran, name, takes, error

    def __call__(self) -> None:
        self.ran.append(self.name)
        if self.error:
            raise RuntimeError(self.error)


def fake_runner(clock: FakeClock) -> Callable[[Callable[[], Any], float, str], str | None]:
    """run_bounded without threads: a hook longer than its timeout is cut off at the timeout."""

    def run(fn: Callable[[], Any], timeout: float, name: str) -> str | None:
        takes = getattr(fn, "takes", 0.0)
        if takes > timeout:
            clock.advance(timeout)
            return f"did not finish within {timeout:g}s; skipped"
        clock.advance(takes)
        try:
            fn()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    return run


class Harness:
    """The real decider and ShutdownEffects on an inline bus: no threads, fake time."""

    def __init__(self, settings: ShutdownSettings | None = None, abandoned: int = 0) -> None:
        self.clock = FakeClock()
        self.server: FakeServer | None = FakeServer(self.clock, abandoned=abandoned)
        self.hooks = ShutdownHooks()
        self.journal = RecordingJournal()
        self.bus = MessageBus(self.journal)
        self.commands: list[cmd.Command] = []
        self.steps: list[Callable[[], None]] = []
        self.ran: list[str] = []
        self.settings = settings or ShutdownSettings()
        self.effects = ShutdownEffects(
            self.commands.append,
            self.clock,
            self.hooks,
            run_hook=fake_runner(self.clock),
            sleep=self._sleep,
            spawn=lambda name, step: self.steps.append(step),
        )
        self.effects.server = self.server
        self.bus.subscribe(ev.DrainStarted, self.effects.on_drain_started)
        self.bus.subscribe(ev.ListenerClosing, self.effects.on_listener_closing)
        self.bus.subscribe(ev.HooksStarted, self.effects.on_hooks_started)
        text = json.dumps({"shutdown": dataclasses.asdict(self.settings)})
        parsed = load_settings(text, "config.json", {})
        assert parsed.settings is not None, parsed.errors
        self.bus.process_inline(cmd.ApplyConfig(source="c", parsed=parsed, **META))
        self.bus.process_inline(cmd.MarkReady(**META))

    def _sleep(self, seconds: float) -> None:
        assert self.server is not None
        self.server.calls.append(f"sleep({seconds:g})")
        self.clock.advance(seconds)

    def hook(self, name: str, order: int, **behaviour: Any) -> None:
        timeout = behaviour.pop("timeout", None)
        self.hooks.add(name, FakeHook(self.ran, name, **behaviour), order=order, timeout=timeout)

    def run(self) -> None:
        """SIGTERM, then every step and report until nothing is left to do."""
        self.commands.append(cmd.RequestShutdown(signal="SIGTERM", **META))
        while self.commands or self.steps:
            while self.commands:
                command = self.commands.pop(0)
                at = {"at": 1000.0 + self.clock.monotonic()}
                self.bus.process_inline(dataclasses.replace(command, **at))
            if self.steps:
                self.steps.pop(0)()

    def events(self) -> list[str]:
        return [type(e).__name__ for e in self.journal.events]

    def failures(self) -> list[tuple[str, str]]:
        return [(e.hook, e.reason) for e in self.journal.events if isinstance(e, ev.HookFailed)]

    def stopped(self) -> ev.Stopped:
        return next(e for e in self.journal.events if isinstance(e, ev.Stopped))

    @property
    def exit_codes(self) -> list[int]:
        return [e.exit_code for e in self.journal.events if isinstance(e, ev.Stopped)]


def test_drains_then_runs_hooks_in_order_and_exits_0() -> None:
    h = Harness(ShutdownSettings(drain_delay=5, grace_period=40))
    h.hook("log-flush", 50)
    h.hook("integrations", 10)
    h.hook("config-watcher", 30)
    h.hook("app-a", 100)
    h.hook("app-b", 100)
    h.hook("secrets-refresher", 20)
    h.run()
    assert h.server is not None and h.server.calls == [
        "start_draining",
        "sleep(5)",
        "start_draining",
        "close_listener",
        "wait_drained(25)",
        "stop(1)",
    ]
    assert h.ran == [
        "integrations",
        "secrets-refresher",
        "config-watcher",
        "log-flush",
        "app-a",
        "app-b",
    ]
    assert h.events()[-7:] == [
        "ShutdownRequested",
        "DrainStarted",
        "ListenerClosing",
        "ListenerClosed",
        "Drained",
        "HooksStarted",
        "Stopped",
    ]
    durations = dict(h.stopped().phase_durations)
    assert durations == {
        "drain_delay": 5.0,
        "close_listener": 0.0,
        "drain": 0.5,
        "hooks": 0.0,
        "total": 5.5,
    }
    assert h.exit_codes == [0] and h.stopped().exit_code == 0


def test_hanging_hook_is_skipped_after_its_timeout_and_the_next_still_runs() -> None:
    h = Harness(ShutdownSettings(hook_timeout=2, hooks_timeout=3))
    h.hook("hangs", 15, takes=1e9)
    h.hook("after", 20)
    h.run()
    assert h.failures() == [("hangs", "did not finish within 2s; skipped")]
    assert h.ran == ["after"]
    assert dict(h.stopped().phase_durations)["hooks"] == 2.0
    assert h.exit_codes == [0]


def test_a_hook_own_timeout_replaces_hook_timeout() -> None:
    h = Harness(ShutdownSettings(hook_timeout=2, hooks_timeout=3))
    h.hook("quick-cap", 10, takes=1.0, timeout=0.25)
    h.run()
    assert h.failures() == [("quick-cap", "did not finish within 0.25s; skipped")]


def test_failing_hook_is_logged_and_the_others_still_run() -> None:
    h = Harness()
    h.hook("first", 10)
    h.hook("broken", 20, error="connection pool already closed")
    h.hook("last", 30)
    with capture_logs() as logs:
        h.run()
    assert h.ran == ["first", "broken", "last"]
    reason = "RuntimeError: connection pool already closed"
    assert h.failures() == [("broken", reason)]
    failed = [x for x in logs if x["event"] == "Shutdown hook failed"]
    assert [(x["hook"], x["reason"], x["log_level"]) for x in failed] == [
        ("broken", reason, "error")
    ]
    assert h.exit_codes == [0]


def test_used_up_hooks_budget_skips_the_remaining_hooks() -> None:
    h = Harness(ShutdownSettings(hook_timeout=2, hooks_timeout=3))
    h.hook("slow-ok", 10, takes=2.0)
    h.hook("hangs", 20, takes=1e9)
    h.hook("never-a", 30)
    h.hook("never-b", 40)
    with capture_logs() as logs:
        h.run()
    not_run = "not run: shutdown.hooks_timeout (3s) used up"
    assert h.failures() == [
        ("hangs", "did not finish within 1s; skipped"),
        ("never-a", not_run),
        ("never-b", not_run),
    ]
    assert h.ran == ["slow-ok"]
    skipped = [x for x in logs if x["event"] == "Shutdown hooks skipped"]
    assert skipped[0]["hooks"] == ["never-a", "never-b"]
    assert dict(h.stopped().phase_durations)["hooks"] == 3.0


def test_deadline_with_requests_still_running_exits_1_and_logs_the_count() -> None:
    h = Harness(ShutdownSettings(timeout=4), abandoned=3)
    h.hook("cleanup", 10)
    with capture_logs() as logs:
        h.run()
    drain = next(e for e in h.journal.events if isinstance(e, ev.DrainTimedOut))
    assert (drain.abandoned, drain.duration) == (3, 4.0)
    assert h.server is not None
    assert h.server.calls[-1] == "stop(0.1)", "stuck workers must not eat the hooks budget"
    assert h.ran == ["cleanup"]
    deadline = [x for x in logs if x["event"].startswith("Shutdown deadline reached")]
    assert deadline[0]["abandoned"] == 3
    assert h.exit_codes == [1] and h.stopped().exit_code == 1


def test_signal_before_the_server_exists_runs_only_the_hooks() -> None:
    h = Harness(ShutdownSettings(drain_delay=5, grace_period=40))
    h.server = h.effects.server = None
    h.hook("cleanup", 10)
    h.run()
    assert h.ran == ["cleanup"]
    assert dict(h.stopped().phase_durations)["drain_delay"] == 0.0
    assert h.exit_codes == [0]


def test_hooks_reject_bad_registrations_with_a_clear_message() -> None:
    hooks = ShutdownHooks()
    with pytest.raises(ValueError, match="name must not be empty"):
        hooks.add("", lambda: None)
    with pytest.raises(ValueError, match="'db': timeout must be > 0"):
        hooks.add("db", lambda: None, timeout=0)
    with pytest.raises(TypeError, match=r"'db'.*not callable"):
        hooks.add("db", "close")  # type: ignore[arg-type]


def test_defaults_fit_the_grace_period_and_an_oversized_hooks_budget_is_rejected() -> None:
    assert load_settings("{}", "config.json", {}).errors == ()
    text = json.dumps({"shutdown": {"timeout": 25, "hooks_timeout": 6}})
    errors = load_settings(text, "config.json", {}).errors
    assert errors == (
        "config.json: shutdown: drain_delay (0) + timeout (25) + hooks_timeout (6) = 31s does "
        "not fit in grace_period (30s); lower them or raise grace_period together with "
        "terminationGracePeriodSeconds",
    )


def test_forced_exit_code_is_128_plus_the_signal_number() -> None:
    assert forced_exit_code("SIGTERM") == 143
    assert forced_exit_code("SIGINT") == 130


def test_stop_signals_before_the_runtime_exists_are_replayed_once() -> None:
    relay, seen = StopSignals(), list[str]()
    relay.handle("SIGTERM")
    relay.attach(seen.append)
    relay.handle("SIGINT")
    relay.attach(seen.append)
    assert seen == ["SIGTERM", "SIGINT"]
