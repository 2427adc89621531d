"""The secrets manager: resolves secret:// references, caches them, refreshes and rotates."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from mira.domain.commands import RecordSecretFailure, RecordSecretFetch
from mira.domain.config.model import SecretsSettings, Settings
from mira.domain.config.secret_refs import SecretRef, find_refs, parse_secret_ref
from mira.domain.events import SecretRotated
from mira.domain.ports import Clock, IdGenerator, SecretsBackend, SecretsError
from mira.domain.secret_value import SecretValue

log = structlog.get_logger("mira.secrets")
RefreshCallback = Callable[[Any], None]
#: Rotated-out values stay masked in logs for a while: late errors may still quote them.
RETIRED_KEPT = 64


def _as_text(ref: SecretRef, raw: Any) -> str:
    """A backend's answer as the one string a config value needs."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and len(raw) == 1:
        return str(next(iter(raw.values())))
    if isinstance(raw, dict) and "value" in raw:
        return str(raw["value"])
    raise SecretsError(f"{ref}: the secret has several keys; name one as secret://{ref.path}:KEY")


class SecretsManager:
    """Hot path: `get(text)` is one dict lookup. Writers replace whole dicts (copy-on-write)."""

    def __init__(
        self,
        backend: SecretsBackend,
        submit: Callable[[Any], Any],
        clock: Clock,
        ids: IdGenerator,
        on_values: Callable[[Iterable[str]], None] | None = None,
        on_fetch: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.backend = backend
        self._submit = submit
        self._clock = clock
        self._ids = ids
        self._on_values = on_values or (lambda values: None)
        self._on_fetch = on_fetch or (lambda backend, ok: None)
        self._values: dict[SecretRef, SecretValue] = {}
        self._by_text: dict[str, SecretValue] = {}
        self._callbacks: dict[str, list[RefreshCallback]] = defaultdict(list)
        self._write = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._retired: deque[str] = deque(maxlen=RETIRED_KEPT)
        self._watched: set[str] = set()
        self._started = False
        self._thread: threading.Thread | None = None
        self._unwatch: Callable[[], None] = lambda: None
        self._settings = SecretsSettings()
        self._digests: dict[str, str] = {}
        self._versions: dict[str, str | None] = {}

    # -- reading ---------------------------------------------------------------------------
    def get(self, text: str | None) -> SecretValue | None:
        """The value for a config string: a resolved reference, or the literal itself."""
        if text is None:
            return None
        value = self._by_text.get(text)
        if value is not None:
            return value
        return None if text.startswith("secret://") else SecretValue(text)

    def known_refs(self) -> list[SecretRef]:
        return sorted(self._values)

    # -- resolving -------------------------------------------------------------------------
    def resolve(self, settings: Settings, only_new: bool = False) -> list[tuple[str, str]]:
        """Fetch every reference in `settings`; return (reference, reason) for failures."""
        refs = set(find_refs(settings).values())
        if only_new:
            refs -= self._values.keys()
        failures = self._fetch(refs)
        if self._started:
            self._watch_new()
        return [(str(ref), why) for ref, why in failures.items()]

    def refresh(self, names: Iterable[str] | None = None) -> bool:
        """Re-read known secrets (all, or those named); True when every read succeeded."""
        wanted = set(names) if names is not None else None
        refs = {r for r in self._values if wanted is None or r.path in wanted}
        return not self._fetch(refs)

    def _fetch(self, refs: set[SecretRef]) -> dict[SecretRef, str]:
        fetched: dict[SecretRef, SecretValue] = {}
        failures: dict[SecretRef, str] = {}
        for ref in sorted(refs):
            try:
                fetched[ref] = SecretValue(
                    _as_text(ref, self.backend.get_secret(ref.path, ref.key))
                )
                self._on_fetch(self.backend.name, True)
            except Exception as exc:  # any backend failure keeps the cached value
                reason = _safe_reason(exc)
                failures[ref] = reason
                self._on_fetch(self.backend.name, False)
                log.warning(
                    "Secret fetch failed",
                    secret=ref.path,
                    reference=str(ref),
                    backend=self.backend.name,
                    reason=reason,
                )
        if fetched:
            self._store(fetched)
        self._record(fetched, failures)
        return failures

    def _store(self, fetched: dict[SecretRef, SecretValue]) -> None:
        with self._write:
            self._retired.extend(
                old.reveal()
                for ref, new in fetched.items()
                if (old := self._values.get(ref)) is not None and old != new
            )
            values = {**self._values, **fetched}
            self._values = values
            # str(ref) is the reference as written: secret://path:key or secret://path
            self._by_text = {str(ref): v for ref, v in values.items()}
        self._on_values([*(v.reveal() for v in values.values()), *self._retired])

    def _record(
        self, fetched: dict[SecretRef, SecretValue], failures: dict[SecretRef, str]
    ) -> None:
        now, cid = self._clock.now(), self._ids.new_id()
        for name in sorted({r.path for r in fetched} - {r.path for r in failures}):
            parts = sorted(
                (str(r.key), v.reveal()) for r, v in self._values.items() if r.path == name
            )
            digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
            # A version lookup costs a backend call: only when the value changed.
            if self._digests.get(name) != digest:
                self._versions[name] = self._version(name)
            self._digests[name] = digest
            self._submit(
                RecordSecretFetch(
                    correlation_id=cid,
                    at=now,
                    name=name,
                    fingerprint=digest,
                    version=self._versions.get(name),
                    backend=self.backend.name,
                )
            )
        for name, reason in sorted({(r.path, why) for r, why in failures.items()}):
            self._submit(
                RecordSecretFailure(
                    correlation_id=cid, at=now, name=name, reason=reason, backend=self.backend.name
                )
            )

    def _version(self, name: str) -> str | None:
        version = getattr(self.backend, "get_secret_version", None)
        if version is None:
            return None
        try:
            result = version(name)
            return None if result is None else str(result)
        except Exception:
            return None

    # -- rotation --------------------------------------------------------------------------
    def register_refresh_callback(self, name: str, callback: RefreshCallback) -> None:
        """Call `callback(new_value)` after secret `name` rotates (value masked when printed)."""
        self._callbacks[name].append(callback)

    def current(self, name: str) -> Any:
        """The secret's keys in use as {key: SecretValue}, or the SecretValue of a keyless ref."""
        keyed = {r.key: v for r, v in self._values.items() if r.path == name and r.key}
        if keyed:
            return keyed
        return self._values.get(SecretRef(name))

    def on_rotated(self, event: SecretRotated) -> None:
        """Bus handler: run the secret's callbacks, each isolated."""
        new_value = self.current(event.secret)
        for callback in list(self._callbacks.get(event.secret, ())):
            try:
                callback(new_value)
            except Exception:
                log.exception(
                    "Secret refresh callback failed",
                    secret=event.secret,
                    callback=getattr(callback, "__qualname__", repr(callback)),
                )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, settings: SecretsSettings) -> None:
        """Watch the backend where it can push, and refresh periodically when auto_refresh."""
        self._settings = settings
        self._stop.clear()
        if not self._started:
            self._started = True
            start = getattr(self.backend, "start", None)
            if start is not None:
                start()
            self._watch_new()
        if settings.auto_refresh and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mira-secrets", daemon=True)
            self._thread.start()

    def _watch_new(self) -> None:
        """Watch secrets referenced since the last call (a reload may add references)."""
        paths = sorted({r.path for r in self._values} - self._watched)
        if not paths:
            return
        self._watched.update(paths)
        stop_new = self.backend.watch(paths, self._on_pushed_change)
        stop_old = self._unwatch

        def unwatch() -> None:
            try:
                stop_old()
            finally:
                stop_new()

        self._unwatch = unwatch

    def _on_pushed_change(self, path: str) -> None:
        try:
            self.refresh([path])
        except Exception:  # a backend's watch thread must not die of our failure
            log.exception("Secret refresh after a pushed change failed", secret=path)

    def reconfigure(self, settings: SecretsSettings) -> None:
        """Apply a change of the `secrets` section: a new interval takes effect at once."""
        self._settings = settings
        if settings.auto_refresh and self._thread is None:
            self.start(settings)
        elif not settings.auto_refresh and self._thread is not None:
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
                failures = 0 if self.refresh() else failures + 1
            except Exception:
                failures += 1
                log.exception("Secret refresh loop error")

    def _stop_thread(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_thread(timeout)
        self._started = False
        self._watched.clear()
        unwatch, self._unwatch = self._unwatch, lambda: None
        try:
            unwatch()
        finally:
            self.backend.close()


def next_delay(settings: SecretsSettings, failures: int) -> float:
    """Seconds until the next refresh: the interval +-10 %, or a capped back-off after failures.

    The back-off never exceeds the interval, so a recovered backend is seen within one interval.
    """
    if failures:
        backoff = 0.5 * 2.0 ** min(failures - 1, 30)
        return min(settings.max_backoff, settings.refresh_interval, backoff)
    return settings.refresh_interval * random.uniform(0.9, 1.1)


def _safe_reason(exc: Exception) -> str:
    """Why a fetch failed, without the reference (callers name it); never a value.

    Backends' own errors (SecretsError) carry readable messages; anything else gets its type.
    """
    text = str(exc)
    if isinstance(exc, SecretsError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["SecretsManager", "next_delay", "parse_secret_ref"]
