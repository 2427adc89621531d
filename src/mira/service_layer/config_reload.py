"""Hot reload: file snapshots become ApplyConfig commands; changes reach subscribers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from mira.domain.commands import ApplyConfig
from mira.domain.config.loading import load_settings
from mira.domain.config.masking import masked_dict
from mira.domain.config.model import ReloadSettings, Settings
from mira.domain.ports import Clock, IdGenerator

log = structlog.get_logger("mira.config")
ReloadCallback = Callable[[dict[str, Any]], None]
KeyCallback = Callable[[Any], None]


class Snapshot(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def text(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def digest(self) -> str: ...


class Watcher(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout: float = 2.0) -> None: ...
    def set_poll_interval(self, seconds: float) -> None: ...
    def check_now(self) -> None: ...


WatcherFactory = Callable[..., Watcher]


class ConfigSubscriptions:
    """Whole-config callbacks (the guide's register_reload_callback) and per-key ones."""

    def __init__(self) -> None:
        self._reload: list[ReloadCallback] = []
        self._keys: list[tuple[str, KeyCallback]] = []

    def register_reload_callback(self, callback: ReloadCallback) -> None:
        """`callback(new_config)` with the new config as a dict (secret values masked)."""
        self._reload.append(callback)

    def subscribe(self, key: str, callback: KeyCallback) -> None:
        """`callback(new_value)` when `key` (e.g. "logging.level") or anything under it changes."""
        self._keys.append((key, callback))

    def notify(self, changed: tuple[str, ...], settings: Settings) -> None:
        data = masked_dict(settings)
        for callback in list(self._reload):
            _call(callback, data, key=None)
        for key, callback in list(self._keys):
            if any(c == key or c.startswith(key + ".") for c in changed):
                _call(callback, _lookup(data, key), key=key)


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _call(callback: Callable[[Any], None], arg: Any, key: str | None) -> None:
    try:
        callback(arg)
    except Exception:
        log.exception(
            "Configuration callback failed",
            key=key,
            callback=getattr(callback, "__qualname__", repr(callback)),
        )


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
        resolve: Callable[[Settings], list[tuple[str, str]]] | None = None,
    ) -> None:
        self.path = path
        self._submit = submit
        self._clock = clock
        self._ids = ids
        self._environ = environ
        self.subscriptions = subscriptions
        self._watcher_factory = watcher_factory
        self._resolve = resolve or (lambda settings: [])
        self._watcher: Watcher | None = None
        self._lock = threading.Lock()
        self._initial_digest: str | None = None

    # the guide's API
    def register_reload_callback(self, callback: ReloadCallback) -> None:
        self.subscriptions.register_reload_callback(callback)

    def subscribe(self, key: str, callback: KeyCallback) -> None:
        self.subscriptions.subscribe(key, callback)

    @property
    def watching(self) -> bool:
        return self._watcher is not None

    def command_for(self, snapshot: Snapshot, correlation_id: str | None = None) -> ApplyConfig:
        """Build ApplyConfig, resolving the new file's secret references first."""
        unresolved: list[tuple[str, str]] = []
        if snapshot.text is not None:
            parsed = load_settings(snapshot.text, snapshot.path, self._environ)
            if parsed.settings is not None:
                unresolved = self._resolve(parsed.settings)
        return ApplyConfig(
            correlation_id=correlation_id or self._ids.new_id(),
            at=self._clock.now(),
            source=snapshot.path,
            text=snapshot.text,
            read_error=snapshot.error,
            environ=dict(self._environ),
            unresolved=tuple(unresolved),
        )

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Watcher callback (its own thread): hand the new content to the bus and wait."""
        command = self.command_for(snapshot)
        structlog.contextvars.bind_contextvars(correlation_id=command.correlation_id)
        try:
            log.debug("Configuration file changed", path=snapshot.path, digest=snapshot.digest[:12])
            self._submit(command)
        finally:
            structlog.contextvars.clear_contextvars()

    def start(self, settings: ReloadSettings, initial_digest: str | None = None) -> None:
        with self._lock:
            if self._watcher is not None or not settings.hot_reload:
                return
            self._initial_digest = initial_digest or self._initial_digest
            watcher = self._watcher_factory(
                self.path,
                self.on_snapshot,
                poll_interval=settings.poll_interval,
                debounce=settings.debounce,
                initial_digest=self._initial_digest,
            )
            watcher.start()
            self._watcher = watcher
        log.info(
            "Watching configuration file", path=self.path, poll_interval=settings.poll_interval
        )

    def reconfigure(self, settings: ReloadSettings) -> None:
        """Apply a change of the `config` section: start/stop watching, new poll interval."""
        if not settings.hot_reload:
            self.stop()
            log.info("Configuration hot reload turned off", path=self.path)
        elif self._watcher is None:
            self.start(settings)
        else:
            self._watcher.set_poll_interval(settings.poll_interval)

    def check_now(self) -> None:
        if self._watcher is not None:
            self._watcher.check_now()

    def stop(self, timeout: float = 2.0) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop(timeout)
