"""The runtime: start-up sequence, effect handlers on the bus, and waiting for the stop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from mira.domain import events as ev
from mira.domain.commands import MarkReady, RequestShutdown
from mira.domain.config.model import LoggingSettings, Settings, ShutdownSettings
from mira.domain.config.secret_refs import find_refs
from mira.domain.ports import Clock, EventJournal, IdGenerator
from mira.domain.state import Phase
from mira.service_layer.bus import MessageBus
from mira.service_layer.config_reload import ConfigReloader, Snapshot
from mira.service_layer.secrets import SecretsManager
from mira.service_layer.shutdown import (
    EXIT_CONFIG,
    EXIT_DEADLINE,
    EXIT_OK,
    ORDER_CONFIG_WATCHER,
    ORDER_JOURNAL,
    ORDER_LOGS,
    ORDER_SECRETS,
    ShutdownCoordinator,
    ShutdownHooks,
    forced_exit_code,
)

log = structlog.get_logger("mira.runtime")


class Server(Protocol):
    def bind(self) -> tuple[str, int]: ...
    def serve_forever(self) -> None: ...
    def start_draining(self) -> None: ...
    def close_listener(self) -> None: ...
    def wait_drained(self, timeout: float) -> int: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    @property
    def in_flight(self) -> int: ...


class StartupError(Exception):
    """Start-up cannot continue; the message is for the operator, exit_code for the process."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _touches(keys: tuple[str, ...], area: str) -> bool:
    return any(k.startswith(area + ".") for k in keys)


def _try(area: str, apply: Callable[[], None]) -> bool:
    try:
        apply()
    except Exception:
        log.exception("Could not apply the new configuration", area=area)
        return False
    return True


class Runtime:
    """Owns the order of things; all decisions are the domain's, all I/O the adapters'."""

    def __init__(
        self,
        *,
        bus: MessageBus,
        secrets: SecretsManager,
        reloader: ConfigReloader,
        hooks: ShutdownHooks,
        server_factory: Callable[[], Server],
        clock: Clock,
        ids: IdGenerator,
        apply_logging: Callable[[LoggingSettings], None],
        observers: list[Callable[[ev.Event], None]] | None = None,
        startup_tasks: list[Callable[[Settings], None]] | None = None,
        exit_process: Callable[[int], None] | None = None,
        journal: EventJournal | None = None,
        flush_logs: Callable[[], None] | None = None,
    ) -> None:
        self.bus = bus
        self._startup_tasks = startup_tasks or []
        self.secrets = secrets
        self.reloader = reloader
        self.hooks = hooks
        self._server_factory = server_factory
        self._clock = clock
        self._ids = ids
        self._apply_logging = apply_logging
        self._exit_process = exit_process
        self._done = threading.Event()
        self._exit_code = 0
        self.server: Server | None = None
        self.address: tuple[str, int] | None = None
        self._serve_thread: threading.Thread | None = None
        self._bus_started = False
        self._early_signals: list[str] = []
        self.coordinator = ShutdownCoordinator(
            bus.submit, clock, hooks, settings=self._shutdown_settings, on_done=self._finish
        )
        self._wire(observers or [])
        self._register_hooks(journal, flush_logs)

    def _shutdown_settings(self) -> ShutdownSettings:
        return (self.bus.state.settings or Settings()).shutdown

    def _register_hooks(
        self, journal: EventJournal | None, flush_logs: Callable[[], None] | None
    ) -> None:
        """Default cleanup hooks after the integrations' own (order 10), in the issue's order."""
        self.hooks.add("secrets-refresher", self.secrets.stop, order=ORDER_SECRETS)
        self.hooks.add("config-watcher", self.reloader.stop, order=ORDER_CONFIG_WATCHER)
        if journal is not None:
            self.hooks.add("journal-flush", journal.flush, order=ORDER_JOURNAL)
        if flush_logs is not None:
            self.hooks.add("log-flush", flush_logs, order=ORDER_LOGS)

    # -- effect handlers -------------------------------------------------------------------
    def _wire(self, observers: list[Callable[[ev.Event], None]]) -> None:
        bus = self.bus
        for observer in observers:
            bus.subscribe(ev.Event, observer)
        bus.subscribe(ev.ConfigChanged, self._on_config_changed)
        bus.subscribe(ev.ConfigRejected, self._on_config_rejected)
        bus.subscribe(ev.SecretRotated, self.secrets.on_rotated)
        bus.subscribe(ev.SecretRotated, self._on_secret_rotated)
        bus.subscribe(ev.DrainStarted, self.coordinator.on_drain_started)
        bus.subscribe(ev.ShutdownRequested, self._on_shutdown_requested)
        bus.subscribe(ev.ShutdownForced, self._on_forced)

    def _on_config_changed(self, event: ev.ConfigChanged) -> None:
        """Apply each changed area on its own: one failing effect stops neither the others,
        nor the success line, nor the subscribers."""
        changed, settings = event.changed_keys, event.settings
        if event.restart_required:
            log.warning(
                "Configuration change needs a restart; not applied (restart required)",
                restart_required=list(event.restart_required),
                generation=event.generation,
            )
        applied = tuple(k for k in changed if k not in event.restart_required)
        effects: list[tuple[str, Callable[[], None]]] = [
            ("logging", lambda: self._apply_logging(settings.logging)),
            ("config", lambda: self.reloader.reconfigure(settings.config)),
            ("secrets", lambda: self.secrets.reconfigure(settings.secrets)),
        ]
        failed = []
        for area, apply in effects:
            if _touches(applied, area) and not _try(area, apply):
                failed.append(area)
        if not applied:
            return
        log.info(
            "Configuration reloaded successfully",
            changed_keys=list(applied),
            generation=event.generation,
            source=event.source,
            **({"failed_effects": failed} if failed else {}),
        )
        self.reloader.subscriptions.notify(applied, settings)

    def _on_config_rejected(self, event: ev.ConfigRejected) -> None:
        log.error(
            "Configuration rejected; keeping the last good configuration",
            source=event.source,
            reasons=list(event.reasons),
            generation=self.bus.state.config_generation,
        )

    def _on_secret_rotated(self, event: ev.SecretRotated) -> None:
        settings = self.bus.state.settings
        if settings is None:
            return
        keys = tuple(
            sorted(k for k, ref in find_refs(settings).items() if ref.path == event.secret)
        )
        if keys:
            log.info(
                "Secret rotated; re-resolved configuration values",
                secret=event.secret,
                changed_keys=list(keys),
            )
            self.reloader.subscriptions.notify(keys, settings)

    def _on_shutdown_requested(self, event: ev.ShutdownRequested) -> None:
        log.info("Shutdown requested", signal=event.signal, phase=event.phase)

    def _on_forced(self, event: ev.ShutdownForced) -> None:
        code = forced_exit_code(event.signal)
        log.warning(
            "Second stop signal during shutdown; exiting now", signal=event.signal, exit_code=code
        )
        if self._exit_process is not None:
            self._exit_process(code)
        self._finish(code)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, snapshot: Snapshot) -> None:
        """Apply the file, bind, serve, become ready. Raises StartupError on failure.

        A stop signal at any point ends start-up early: the remaining steps are skipped and
        the drain (which waits for this method to return) stops whatever was started.
        """
        self.bus.start()
        self._bus_started = True
        for name in self._early_signals:
            self.request_shutdown(name)
        try:
            self._start(snapshot)
        except BaseException:
            if self.server is not None:  # its worker threads would keep the process alive
                self.server.stop(timeout=1.0)
            raise
        finally:
            self.coordinator.startup_finished.set()

    def _start(self, snapshot: Snapshot) -> None:
        command = self.reloader.command_for(snapshot)
        structlog.contextvars.bind_contextvars(correlation_id=command.correlation_id)
        events = self.bus.handle(command, timeout=60)
        failed = [e for e in events if isinstance(e, ev.StartupFailed)]
        if failed:
            raise StartupError("\n".join(failed[0].reasons), failed[0].exit_code)
        settings = self.bus.state.settings
        assert settings is not None
        for task in self._startup_tasks:
            task(settings)
        if self._stopping():
            return
        server = self._server_factory()
        try:
            self.address = server.bind()
        except OSError as exc:
            raise StartupError(str(exc), exit_code=EXIT_DEADLINE) from None
        self.server = server
        self.coordinator.server = server
        self._serve_thread = threading.Thread(target=self._serve, name="mira-server", daemon=True)
        self._serve_thread.start()
        if self._stopping():
            return
        self.secrets.start(settings.secrets)
        if self._stopping():
            return
        self.reloader.start(settings.config, initial_digest=snapshot.digest)
        self.bus.handle(MarkReady(correlation_id=command.correlation_id, at=self._clock.now()))
        if self.bus.state.phase is Phase.READY:
            log.info(
                "Mira started",
                host=self.address[0],
                port=self.address[1],
                generation=self.bus.state.config_generation,
                secrets_backend=self.secrets.backend.name,
            )

    def _serve(self) -> None:
        assert self.server is not None
        try:
            self.server.serve_forever()
        except Exception:
            log.exception("HTTP server failed")
            self.request_shutdown("server-error")

    def _stopping(self) -> bool:
        return self.bus.state.phase in (Phase.DRAINING, Phase.STOPPED)

    def request_shutdown(self, signal_name: str = "SIGTERM") -> None:
        """Safe from a signal handler: only puts a command on the bus queue (or, before the
        bus runs, remembers it for start())."""
        if not self._bus_started:
            self._early_signals.append(signal_name)
            return
        self.bus.submit(
            RequestShutdown(
                correlation_id=self._ids.new_id(), at=self._clock.now(), signal=signal_name
            )
        )

    def _finish(self, exit_code: int) -> None:
        self._exit_code = exit_code
        self._done.set()
        if not self.coordinator.startup_finished.is_set() and self._exit_process is not None:
            # start() is stuck in the main thread past the drain timeout: nothing returns to
            # the entrypoint, so end the process from here.
            self._exit_process(exit_code)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until stopped (waking regularly so signal handlers run); the exit code."""
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        while not self._done.wait(0.2):
            if deadline is not None and self._clock.monotonic() >= deadline:
                return None
        return self._exit_code

    def stop(self, signal_name: str = "stop", timeout: float = 60.0) -> int | None:
        """Run the whole graceful sequence (embedding apps and tests)."""
        if not self._bus_started:
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

    def describe(self) -> dict[str, Any]:
        return {"phase": self.bus.state.phase.value, "address": self.address}
