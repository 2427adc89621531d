"""Hot reload: file snapshots become ApplyConfig commands; changes reach subscribers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import structlog

from mira.domain.commands import ApplyConfig, SecretFailure, SecretFetch
from mira.domain.config.loading import ENV_FALLBACKS, ENV_OVERRIDES, LoadResult, load_settings
from mira.domain.config.model import ReloadSettings, Settings
from mira.domain.config.secret_refs import PREFIX
from mira.domain.ports import Clock, IdGenerator, Snapshot, Watcher, WatcherFactory
from mira.service_layer.config_subscriptions import (
    ConfigSubscriptions,
    KeyCallback,
    ReloadCallback,
)

log = structlog.get_logger("mira.config")
Staged = tuple[tuple[SecretFetch, ...], tuple[SecretFailure, ...]]
#: stage(settings) -> the staged reads of its secret references, and the failed ones
Stager = Callable[[Settings], Staged]
#: A watcher thread cannot wait longer than the platform allows (threading.TIMEOUT_MAX); a day
#: between polls is already far beyond any useful fallback.
MAX_POLL_INTERVAL = 86_400.0
_ENV_NAMES = (*ENV_OVERRIDES, *ENV_FALLBACKS)
_REF_MARK = PREFIX.rstrip("/")  # "secret:"; JSON may write the slashes as \/


def _may_hold_refs(text: str, environ: Mapping[str, str]) -> bool:
    """False only when no value can be a secret reference: then parsing here is skipped.

    A JSON string decodes to "secret://..." only if the text holds "secret:" literally or
    \\u escapes (other escapes make none of its letters); env values are used as they are.
    """
    if _REF_MARK in text or "\\u" in text:
        return True
    return any(_REF_MARK in environ.get(name, "") for name in _ENV_NAMES)


def _interval(settings: ReloadSettings) -> float:
    if settings.poll_interval <= MAX_POLL_INTERVAL:
        return settings.poll_interval
    log.warning(
        "config.poll_interval is too long; polling once a day instead",
        poll_interval=settings.poll_interval,
        used=MAX_POLL_INTERVAL,
    )
    return MAX_POLL_INTERVAL


class ConfigReloader:
    """The object the guide calls `app.hot_reload_config`."""

    def __init__(
        self,
        path: str,
        submit: Callable[[ApplyConfig], Any],
        clock: Clock,
        ids: IdGenerator,
        environ: Mapping[str, str],
        subscriptions: ConfigSubscriptions,
        watcher_factory: WatcherFactory,
        stage: Stager | None = None,
        backend_name: str = "env",
        checks: list[Callable[[Settings], list[str]]] | None = None,
        mount_check: Callable[[str], str | None] = lambda path: None,
    ) -> None:
        self.path = path
        self._submit = submit
        self._clock = clock
        self._ids = ids
        self._environ = environ
        self.subscriptions = subscriptions
        self._watcher_factory = watcher_factory
        self._stage: Stager = stage or (lambda settings: ((), ()))
        self._backend_name = backend_name
        self._checks = checks or []
        self._mount_check = mount_check
        self._watcher: Watcher | None = None
        self._watching: ReloadSettings | None = None
        self._lock = threading.RLock()
        self._last_digest: str | None = None

    # the guide's API
    def register_reload_callback(self, callback: ReloadCallback) -> None:
        """`callback(new_config)` after each applied change (new config as a dict, masked)."""
        self.subscriptions.register_reload_callback(callback)

    def subscribe(self, key: str, callback: KeyCallback) -> None:
        """`callback(new_value)` only when `key` or a key under it changed."""
        self.subscriptions.subscribe(key, callback)

    @property
    def watching(self) -> bool:
        return self._watcher is not None

    def command_for(self, snapshot: Snapshot, correlation_id: str | None = None) -> ApplyConfig:
        """Parse the snapshot once and stage its secret references' values."""
        if snapshot.text is None:
            parsed = LoadResult(None, (snapshot.error or f"{snapshot.path}: could not be read",))
        else:
            parsed = load_settings(snapshot.text, snapshot.path, self._environ)
        fetches, failures = self._staged(snapshot, parsed)
        problems = self._check(parsed.settings) if not failures else ()
        return ApplyConfig(
            correlation_id=correlation_id or self._ids.new_id(),
            at=self._clock.now(),
            source=snapshot.path,
            parsed=parsed,
            fetches=fetches,
            failures=failures,
            problems=problems,
            backend=self._backend_name,
        )

    def _check(self, settings: Settings | None) -> tuple[str, ...]:
        """What applying `settings` would run into (e.g. a log file that cannot be written)."""
        if settings is None:
            return ()
        found: list[str] = []
        for check in self._checks:
            try:
                found.extend(check(settings))
            except Exception as exc:
                found.append(f"checking the new configuration failed: {type(exc).__name__}")
        return tuple(found)

    def _staged(self, snapshot: Snapshot, parsed: LoadResult) -> Staged:
        if parsed.settings is None or snapshot.text is None:
            return (), ()  # the decider rejects it with the parse errors
        if not _may_hold_refs(snapshot.text, self._environ):
            return (), ()
        try:
            return self._stage(parsed.settings)
        except Exception as exc:
            log.exception("Reading the new configuration's secret references failed")
            why = f"could not be resolved: {type(exc).__name__}"
            return (), (SecretFailure("secret references", why, 0),)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Watcher callback (its own thread): put the new content on the bus, do not wait.

        Not waiting matters: the bus thread may be stopping this very watcher (hot reload
        turned off by the file being applied).
        """
        self._last_digest = snapshot.digest
        command = self.command_for(snapshot)
        structlog.contextvars.bind_contextvars(correlation_id=command.correlation_id)
        try:
            log.debug("Configuration file changed", path=snapshot.path, digest=snapshot.digest[:12])
            result = self._submit(command)
            if isinstance(result, Future):
                result.add_done_callback(_log_failure)
        finally:
            structlog.contextvars.clear_contextvars()

    def start(self, settings: ReloadSettings, initial_digest: str | None = None) -> None:
        """Start watching if `settings.hot_reload`; changes after `initial_digest` are applied."""
        with self._lock:
            if self._watcher is not None or not settings.hot_reload:
                return
            self._last_digest = initial_digest or self._last_digest
            watcher = self._watcher_factory(
                self.path,
                self.on_snapshot,
                poll_interval=_interval(settings),
                debounce=settings.debounce,
                initial_digest=self._last_digest,
            )
            watcher.start()
            self._watcher, self._watching = watcher, settings
        log.info(
            "Watching configuration file", path=self.path, poll_interval=settings.poll_interval
        )
        problem = self._mount_check(self.path)
        if problem is not None:
            log.warning("Hot reload will not see ConfigMap updates", reason=problem, path=self.path)

    def reconfigure(self, settings: ReloadSettings) -> None:
        """Apply a change of the `config` section: start/stop watching, new poll interval."""
        with self._lock:
            current = self._watching
            if not settings.hot_reload:
                if self._watcher is not None:
                    self.stop()
                    log.info("Configuration hot reload turned off", path=self.path)
                return
            if self._watcher is not None and current is not None:
                if current.debounce != settings.debounce:
                    self.stop()  # the debounce is fixed at construction: restart the watcher
                else:
                    self._watcher.set_poll_interval(_interval(settings))
                    self._watching = settings
                    log.info(
                        "Configuration poll interval changed", poll_interval=_interval(settings)
                    )
                    return
            self.start(settings)

    def check_now(self) -> None:
        """Read the file now on the calling thread (a change goes to the bus, unawaited)."""
        watcher = self._watcher
        if watcher is not None:
            watcher.check_now()

    def stop(self, timeout: float = 2.0) -> None:
        with self._lock:
            watcher, self._watcher, self._watching = self._watcher, None, None
        if watcher is not None:
            watcher.stop(timeout)


def _log_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error(
            "Configuration change could not be handed to the bus",
            error=f"{type(exc).__name__}: {exc}",
        )
