"""The lifecycle decider: start-up, readiness and each step of the shutdown, and exit codes.

STARTING -> READY -> DRAINING -> CLOSING -> HOOKS -> STOPPED. Each shutdown step is an event
that tells the effects what to do next; they report the fact back as a command, and the next
step is decided here. Exit codes: 0 clean (also when the stop came during start-up); 1 when
the drain deadline passed with requests still running or start-up failed at run time; 2 for a
configuration error at start-up; 128 + the signal number (143 SIGTERM, 130 SIGINT) when a
second stop signal arrived during the shutdown.
"""

from __future__ import annotations

import signal
from typing import TypedDict

from mira.domain import commands as cmd
from mira.domain import events as ev
from mira.domain.config.model import Settings
from mira.domain.state import SHUTTING_DOWN, Phase, RuntimeState

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class Meta(TypedDict):
    correlation_id: str
    at: float


def forced_exit_code(signal_name: str) -> int:
    """A second signal during the shutdown exits at once with 128 + the signal number."""
    try:
        return 128 + int(signal.Signals[signal_name])
    except KeyError:
        return 128 + int(signal.SIGINT)


def decide(command: cmd.Command, state: RuntimeState, meta: Meta) -> list[ev.Event]:
    shutdown = (state.settings or Settings()).shutdown
    match command:
        case cmd.MarkReady():
            if state.phase is Phase.STARTING and state.settings is not None:
                return [ev.ServiceReady(generation=state.config_generation, **meta)]
            return []
        case cmd.AbortStartup(reason=why, cause=cause):
            if state.phase is not Phase.STARTING:
                return []  # a stop signal came first: the shutdown it started goes on
            code = EXIT_CONFIG if cause == "config" else EXIT_FAILURE
            return [ev.StartupFailed(reasons=(why,), exit_code=code, **meta)]
        case cmd.RequestShutdown(signal=sig):
            return _request_shutdown(sig, state, meta)
        case cmd.DrainDelayElapsed(seconds=s) if state.phase is Phase.DRAINING:
            return [ev.ListenerClosing(timeout=shutdown.timeout, delayed=s, **meta)]
        case cmd.RecordListenerClosed(seconds=s) if state.phase is Phase.CLOSING:
            return [ev.ListenerClosed(seconds=s, **meta)]
        case cmd.RequestsDrained(abandoned=n, seconds=s) if state.phase is Phase.CLOSING:
            drained: ev.Event = (
                ev.DrainTimedOut(abandoned=n, duration=s, **meta)
                if n
                else ev.Drained(duration=s, **meta)
            )
            hooks = ev.HooksStarted(
                hooks_timeout=shutdown.hooks_timeout, hook_timeout=shutdown.hook_timeout, **meta
            )
            return [drained, hooks]
        case cmd.HooksFinished(failures=failures, seconds=s) if state.phase is Phase.HOOKS:
            return [
                *(ev.HookFailed(hook=h, reason=r, **meta) for h, r in failures),
                _stopped(state, s, meta),
            ]
        case (
            cmd.DrainDelayElapsed()
            | cmd.RecordListenerClosed()
            | cmd.RequestsDrained()
            | cmd.HooksFinished()
        ):
            return []  # a late report (the shutdown was forced meanwhile): nothing to decide
    raise TypeError(f"unknown command {type(command).__name__}")


def _request_shutdown(sig: str, state: RuntimeState, meta: Meta) -> list[ev.Event]:
    if state.phase in SHUTTING_DOWN:
        return [ev.ShutdownForced(signal=sig, exit_code=forced_exit_code(sig), **meta)]
    if state.phase is Phase.STOPPED:
        return []
    shutdown = (state.settings or Settings()).shutdown
    # Before ready no traffic was routed here: nothing to keep serving for.
    delay = shutdown.drain_delay if state.phase is Phase.READY else 0.0
    return [
        ev.ShutdownRequested(signal=sig, phase=state.phase.value, **meta),
        ev.DrainStarted(drain_delay=delay, timeout=shutdown.timeout, **meta),
    ]


def _stopped(state: RuntimeState, hooks_seconds: float, meta: Meta) -> ev.Stopped:
    code = EXIT_FAILURE if state.abandoned_requests else EXIT_OK
    started = state.shutdown_started_at if state.shutdown_started_at is not None else meta["at"]
    durations = (
        *state.phase_durations,
        ("hooks", round(hooks_seconds, 4)),
        ("total", round(max(0.0, meta["at"] - started), 4)),
    )
    return ev.Stopped(exit_code=code, phase_durations=durations, **meta)
