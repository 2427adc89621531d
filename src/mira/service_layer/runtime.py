"""The runtime: the start-up sequence, the bus's effect handlers, and waiting for the stop."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

import structlog

from mira.domain import events as ev
from mira.domain.commands import AbortStartup, MarkReady, RequestShutdown
from mira.domain.config.model import Settings
from mira.domain.lifecycle import EXIT_FAILURE, EXIT_OK
from mira.domain.ports import Clock, EventJournal, IdGenerator, Server, Snapshot
from mira.domain.state import SHUTTING_DOWN, Phase
from mira.service_layer.bus import MessageBus
from mira.service_layer.config_effects import ConfigEffects
from mira.service_layer.config_reload import ConfigReloader
from mira.service_layer.rollout import Rollout
from mira.service_layer.secrets import SecretsManager
from mira.service_layer.shutdown import (
    ORDER_CONFIG_WATCHER,
    ORDER_JOURNAL,
    ORDER_LOGS,
    ORDER_SECRETS,
    ShutdownEffects,
    ShutdownHooks,
)

log = structlog.get_logger("mira.runtime")


def _stderr(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


class StartupError(Exception):
    """Start-up cannot continue; the message is for the operator, exit_code for the process."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Runtime:
    """Owns the order of things; all decisions are the domain's, all I/O the adapters'."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        secrets: SecretsManager,
        reloader: ConfigReloader,
        hooks: ShutdownHooks,
        config_effects: ConfigEffects,
        server_factory: Callable[[], Server],
        clock: Clock,
        ids: IdGenerator,
        observers: list[Callable[[ev.Event], None]] | None = None,
        startup_tasks: list[Callable[[Settings], None]] | None = None,
        exit_process: Callable[[int], None] | None = None,
        journal: EventJournal | None = None,
        flush_logs: Callable[[], None] | None = None,
        rollout: Rollout | None = None,
    ) -> None:
        self.bus = bus
        self.secrets = secrets
        self.reloader = reloader
        self.hooks = hooks
        self._startup_tasks = startup_tasks or []
        self._server_factory = server_factory
        self._clock = clock
        self._ids = ids
        #: ends the process at once with a code (None when embedded: nothing is ended)
        self.exit_process = exit_process
        self._done = threading.Event()
        self._started = threading.Event()  # start() returned (or raised)
        self._exit_code = EXIT_OK
        self._deadline: threading.Thread | None = None
        self.server: Server | None = None
        self.address: tuple[str, int] | None = None
        self.shutdown = ShutdownEffects(bus.submit, clock, hooks)
        self._wire(config_effects, observers or [], rollout)
        # Mira's own cleanup, after the integrations' (order 10), in the issue's order.
        hooks.add("secrets-refresher", secrets.stop, order=ORDER_SECRETS)
        hooks.add("config-watcher", reloader.stop, order=ORDER_CONFIG_WATCHER)
        if journal is not None:
            hooks.add("journal-flush", journal.flush, order=ORDER_JOURNAL)
        if flush_logs is not None:
            hooks.add("log-flush", flush_logs, order=ORDER_LOGS)

    def _wire(
        self,
        config: ConfigEffects,
        observers: list[Callable[[ev.Event], None]],
        rollout: Rollout | None,
    ) -> None:
        bus, secrets, shutdown = self.bus, self.secrets, self.shutdown
        for observer in observers:
            bus.subscribe(ev.Event, observer)
        # Secrets first: a promoted value is in use before anything reacts to the change.
        bus.subscribe(ev.SecretPromoted, secrets.on_promoted)
        bus.subscribe(ev.SecretFetchDiscarded, secrets.on_discarded)
        bus.subscribe(ev.ConfigLoaded, secrets.on_config)
        bus.subscribe(ev.ConfigChanged, secrets.on_config)
        if rollout is not None:  # workers serve the decided state before anything reacts
            bus.subscribe(ev.Event, rollout.on_event)
            config.committed = rollout.committed
        bus.subscribe(ev.SecretRotated, secrets.on_rotated)
        bus.subscribe(ev.SecretRotated, config.on_secret_rotated)
        bus.subscribe(ev.ConfigChanged, config.on_changed)
        bus.subscribe(ev.ConfigRejected, config.on_rejected)
        bus.subscribe(ev.ConfigNeedsRestart, config.on_needs_restart)
        bus.subscribe(ev.ShutdownRequested, self._on_shutdown_requested)
        bus.subscribe(ev.DrainStarted, shutdown.on_drain_started)
        bus.subscribe(ev.ListenerClosing, shutdown.on_listener_closing)
        bus.subscribe(ev.HooksStarted, shutdown.on_hooks_started)
        bus.subscribe(ev.Stopped, self._on_stopped)
        bus.subscribe(ev.ShutdownForced, self._on_forced)

    def _on_shutdown_requested(self, event: ev.ShutdownRequested) -> None:
        log.info("Shutdown requested", signal=event.signal, phase=event.phase, lifecycle=True)

    def _on_stopped(self, event: ev.Stopped) -> None:
        log.info(
            "Shutdown complete",
            exit_code=event.exit_code,
            lifecycle=True,
            **{f"{k}_seconds": v for k, v in event.phase_durations},
        )
        self._finish(event.exit_code)

    def _on_forced(self, event: ev.ShutdownForced) -> None:
        log.warning(
            "Second stop signal during shutdown; exiting now",
            signal=event.signal,
            exit_code=event.exit_code,
        )
        if self.exit_process is not None:
            self.exit_process(event.exit_code)
        self._finish(event.exit_code)

    # -- start-up --------------------------------------------------------------------------
    def start(self, snapshot: Snapshot) -> None:
        """Apply the file, bind, serve, become ready. Raises StartupError on failure.

        A stop signal at any point ends start-up early: the remaining steps are skipped and
        the shutdown the domain decided stops whatever was started.
        """
        self.bus.start()
        try:
            self._start(snapshot)
        except BaseException:
            server = self.server
            if server is not None:  # its worker threads would keep the process alive
                server.stop(timeout=1.0)
            raise
        finally:
            self._started.set()

    def _start(self, snapshot: Snapshot) -> None:
        command = self.reloader.command_for(snapshot)
        structlog.contextvars.bind_contextvars(correlation_id=command.correlation_id)
        events = self.bus.handle(command, timeout=None)
        failed = [e for e in events if isinstance(e, ev.StartupFailed)]
        if failed:
            raise StartupError("\n".join(failed[0].reasons), failed[0].exit_code)
        settings = self.bus.state.settings
        if settings is None or self._stopping():
            return
        for task in self._startup_tasks:
            task(settings)
        if not self._bind(command.correlation_id):
            return
        self.secrets.start(settings.secrets)
        if self._stopping():
            return
        self.reloader.start(settings.config, initial_digest=snapshot.digest)
        self.bus.handle(MarkReady(correlation_id=command.correlation_id, at=self._clock.now()))
        if self.bus.state.phase is Phase.READY and self.address is not None:
            log.info(
                "Mira started",
                host=self.address[0],
                port=self.address[1],
                generation=self.bus.state.config_generation,
                secrets_backend=self.secrets.backend.name,
                lifecycle=True,
            )

    def _bind(self, cid: str) -> bool:
        """Bind and serve unless the shutdown already closed the (absent) listener."""
        with self.shutdown.start_lock:
            if self.shutdown.cancelled:
                return False
            server = self._server_factory()
            try:
                self.address = server.bind()
            except OSError as exc:
                self._abort(cid, str(exc))
                return False
            self.server = self.shutdown.server = server
        threading.Thread(
            target=self._serve, args=(server,), name="mira-server", daemon=True
        ).start()
        return not self._stopping()

    def _abort(self, cid: str, reason: str) -> None:
        events = self.bus.handle(
            AbortStartup(correlation_id=cid, at=self._clock.now(), reason=reason)
        )
        for event in events:
            if isinstance(event, ev.StartupFailed):
                raise StartupError(reason, event.exit_code)

    def _serve(self, server: Server) -> None:
        try:
            server.serve_forever()
        except Exception:
            log.exception("HTTP server failed")
            self.request_shutdown("server-error")

    def _stopping(self) -> bool:
        phase = self.bus.state.phase
        return phase in SHUTTING_DOWN or phase is Phase.STOPPED

    # -- stopping --------------------------------------------------------------------------
    def request_shutdown(self, signal_name: str = "SIGTERM") -> None:
        """Safe from a signal handler: puts a command on the bus queue, and makes sure the
        process ends within shutdown.grace_period even if the bus cannot run the drain."""
        self._arm_deadline()
        self.bus.submit(
            RequestShutdown(
                correlation_id=self._ids.new_id(), at=self._clock.now(), signal=signal_name
            )
        )

    def _arm_deadline(self) -> None:
        if self._deadline is not None or self.exit_process is None:
            return
        grace = (self.bus.state.settings or Settings()).shutdown.grace_period
        self._deadline = threading.Thread(
            target=self._enforce_deadline, args=(grace,), name="mira-shutdown-deadline"
        )
        self._deadline.daemon = True
        self._deadline.start()

    def _enforce_deadline(self, grace: float) -> None:
        if self._done.wait(grace) or self.exit_process is None:
            return
        _stderr(
            f"mira: shutdown did not finish within shutdown.grace_period ({grace:g}s)"
            f"{'; ' + why if (why := self.bus.stalled(0.0)) else ''}; exiting with 1\n"
        )
        self.exit_process(EXIT_FAILURE)

    def _finish(self, exit_code: int) -> None:
        self._exit_code = exit_code
        self._done.set()
        if not self._started.is_set() and self.exit_process is not None:
            # start() is still blocked in the main thread (an unreachable backend): nothing
            # returns to the entrypoint, so end the process from here.
            self.exit_process(exit_code)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until stopped (waking regularly so signal handlers run); the exit code."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        while not self._done.wait(0.2):
            if deadline is not None and self._clock.monotonic() >= deadline:
                return None
        return self._exit_code

    def stop(self, signal_name: str = "stop", timeout: float = 60.0) -> int | None:
        """Run the whole graceful sequence (embedding apps and tests)."""
        if not self.bus.running:
            return EXIT_OK
        if self._done.is_set() or self.bus.state.phase is Phase.STOPPED:
            return self._exit_code
        self.request_shutdown(signal_name)
        return self.wait(timeout)

    def close(self) -> None:
        """After the stop: stop the bus."""
        self.bus.stop()

    @property
    def settings(self) -> Settings | None:
        return self.bus.state.settings
