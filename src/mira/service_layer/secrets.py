"""The secrets manager: the guide's API over the cache, the fetcher and the refresh loop.

Reads happen on any thread (start-up, the refresh loop, backends' push threads) and only stage
what they saw; the bus decides which read is the newest and promotes it into the cache on its
own thread, so a slow read of an old value can never roll a rotation back.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from mira.domain import events as ev
from mira.domain.commands import (
    RecordSecretFailure,
    RecordSecretFetch,
    SecretFailure,
    SecretFetch,
)
from mira.domain.config.model import SecretsSettings, Settings
from mira.domain.config.secret_refs import SecretRef, find_refs
from mira.domain.ports import Clock, IdGenerator, SecretsBackend
from mira.domain.secret_value import SecretValue
from mira.service_layer.bus import MessageBus
from mira.service_layer.callbacks import call_isolated
from mira.service_layer.secret_cache import SecretCache
from mira.service_layer.secret_fetch import SecretFetcher

log = structlog.get_logger("mira.secrets")
RefreshCallback = Callable[[Any], None]
Staged = tuple[tuple[SecretFetch, ...], tuple[SecretFailure, ...]]


class SecretCallbacks:
    """The guide's register_refresh_callback registry (kept apart from any backend)."""

    def __init__(self) -> None:
        self._callbacks: dict[str, tuple[RefreshCallback, ...]] = defaultdict(tuple)
        self._lock = threading.Lock()

    def register(self, name: str, callback: RefreshCallback) -> None:
        if not callable(callback):
            raise TypeError(f"register_refresh_callback needs a callable, got {callback!r}")
        with self._lock:
            self._callbacks[name] = (*self._callbacks[name], callback)

    def run(self, name: str, new_value: Any) -> None:
        for callback in self._callbacks.get(name, ()):
            call_isolated(callback, new_value, "Secret refresh callback failed", secret=name)


class SecretsManager:
    """`get_secrets_manager()`: read values, register rotation callbacks, refresh on demand."""

    def __init__(
        self,
        fetcher: SecretFetcher,
        cache: SecretCache,
        bus: MessageBus,
        clock: Clock,
        ids: IdGenerator,
        callbacks: SecretCallbacks | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.cache = cache
        self._bus = bus
        self._clock = clock
        self._ids = ids
        self.callbacks = callbacks or SecretCallbacks()
        self._lock = threading.Lock()  # guards the watches and the loop thread (not the cache)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._watches: dict[str, Callable[[], None]] = {}
        self._started = False
        self._settings = SecretsSettings()

    @property
    def backend(self) -> SecretsBackend:
        return self.fetcher.backend

    # -- reading ---------------------------------------------------------------------------
    def get(self, text: str | None) -> SecretValue | None:
        """The value for a config string: a resolved reference, or the literal itself."""
        return self.cache.get(text)

    def current(self, name: str) -> Any:
        return self.cache.current(name)

    def known_refs(self) -> list[SecretRef]:
        return self.cache.refs()

    # -- reading from the backend ----------------------------------------------------------
    def stage(
        self, settings: Settings
    ) -> tuple[tuple[SecretFetch, ...], tuple[SecretFailure, ...]]:
        """Read every reference of `settings` (a config about to be applied); stage only."""
        outcome = self.fetcher.fetch(find_refs(settings).values(), self._bus.state.secrets)
        return tuple(outcome.fetched), tuple(outcome.failed)

    def refresh(self, names: Iterable[str] | None = None, wait: bool = True) -> bool:
        """Re-read the live configuration's secrets (all, or those named); True when every read
        succeeded. With `wait`, the new values are in use when this returns."""
        settings = self._bus.state.settings
        if settings is None:
            return True
        wanted = set(names) if names is not None else None
        refs = [r for r in find_refs(settings).values() if wanted is None or r.path in wanted]
        outcome = self.fetcher.fetch(refs, self._bus.state.secrets)
        now, cid, backend = self._clock.now(), self._ids.new_id(), self.backend.name
        commands = [
            *(
                RecordSecretFetch(correlation_id=cid, at=now, fetch=f, backend=backend)
                for f in outcome.fetched
            ),
            *(
                RecordSecretFailure(correlation_id=cid, at=now, failure=f, backend=backend)
                for f in outcome.failed
            ),
        ]
        for command in commands:
            if wait:
                self._bus.handle(command)
            else:
                self._bus.submit(command)
        return outcome.ok

    # -- the bus's handlers (its thread) ---------------------------------------------------
    def on_promoted(self, event: ev.SecretPromoted) -> None:
        values = self.fetcher.staging.take(event.seq)
        if values is not None:
            self.cache.promote(values)

    def on_discarded(self, event: ev.SecretFetchDiscarded) -> None:
        self.fetcher.staging.take(event.seq)

    def on_config(self, event: ev.ConfigLoaded | ev.ConfigChanged) -> None:
        """Only the live configuration's references stay cached and watched."""
        refs = set(find_refs(event.settings).values())
        self.cache.retain(refs)
        if self._started:
            self._watch({r.path for r in refs})
        if isinstance(event, ev.ConfigChanged) and any(
            k.startswith("secrets.") for k in event.changed_keys
        ):
            self.reconfigure(event.settings.secrets)

    def on_rotated(self, event: ev.SecretRotated) -> None:
        """Run the secret's callbacks, each isolated."""
        self.callbacks.run(event.secret, self.cache.current(event.secret))

    def register_refresh_callback(self, name: str, callback: RefreshCallback) -> None:
        """Call `callback(new_value)` after secret `name` rotates (value masked when printed)."""
        self.callbacks.register(name, callback)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, settings: SecretsSettings) -> None:
        """Watch the backend where it can push, and refresh periodically when auto_refresh."""
        with self._lock:
            if not self._started:
                self._started = True
                self._stop.clear()
                self.backend.start()
        live = self._bus.state.settings
        if live is not None:
            self._watch({r.path for r in find_refs(live).values()})
        self.reconfigure(settings)

    def _watch(self, names: set[str]) -> None:
        """Watch exactly `names` (a reload may add or drop references)."""
        with self._lock:
            dropped = [self._watches.pop(n) for n in sorted(set(self._watches) - names)]
            for name in sorted(names - set(self._watches)):
                self._watches[name] = self.backend.watch([name], self._on_pushed_change)
        for stop in dropped:
            _quietly(stop)

    def _on_pushed_change(self, path: str) -> None:
        try:
            # Not waiting: the bus thread may be stopping this very watch.
            self.refresh([path], wait=False)
        except Exception:  # a backend's watch thread must not die of our failure
            log.exception("Secret refresh after a pushed change failed", secret=path)

    def reconfigure(self, settings: SecretsSettings) -> None:
        """Apply the `secrets` section: a new interval takes effect at once."""
        with self._lock:
            self._settings = settings
            if not self._started:
                return
            if settings.auto_refresh and self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="mira-secrets", daemon=True)
                self._thread.start()
                return
            thread = self._thread if not settings.auto_refresh else None
        if thread is not None:
            self._stop_thread()
        else:
            self._wake.set()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._wake.wait(next_delay(self._settings, failures)):
                self._wake.clear()
                continue  # stopped, or reconfigured: wait again with the new settings
            try:
                failures = 0 if self.refresh(wait=False) else failures + 1
            except Exception:
                failures += 1
                log.exception("Secret refresh loop error")

    def _stop_thread(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_thread(timeout)
        with self._lock:
            self._started = False
            watches, self._watches = list(self._watches.values()), {}
        for unwatch in watches:
            _quietly(unwatch)
        self.backend.close()


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        log.exception("Stopping a secret watch failed")


def next_delay(settings: SecretsSettings, failures: int) -> float:
    """Seconds until the next refresh: the interval +-10 %, or a capped back-off after failures.

    The back-off never exceeds the interval, so a recovered backend is seen within one interval.
    """
    if failures:
        backoff = 0.5 * 2.0 ** min(failures - 1, 30)
        return min(settings.max_backoff, settings.refresh_interval, backoff)
    return settings.refresh_interval * random.uniform(0.9, 1.1)
