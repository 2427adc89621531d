"""Kubernetes Secrets backend: reads via the API, watch-fed cache, 410-aware re-list."""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import structlog

from mira.domain.config.model import KubernetesSecretsSettings
from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable

log = structlog.get_logger("mira.secrets.kubernetes")

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
_Key = tuple[str, str]  # (namespace, name)
_UNKNOWN = object()
_MIN_BACKOFF = 0.2


class KubernetesSecretsBackend(SecretsBackend):
    """Secrets of one namespace; `path` is `name` or `namespace/name`, `key` a data key."""

    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSecretsSettings,
        environ: Mapping[str, str] = os.environ,
        *,
        token_file: str = f"{SERVICE_ACCOUNT}/token",
        ca_file: str = f"{SERVICE_ACCOUNT}/ca.crt",
        request_timeout: float = 10.0,
        watch_timeout: int = 240,
        max_backoff: float = 10.0,
    ) -> None:
        self._settings = settings
        self._timeout = request_timeout
        self._watch_timeout = watch_timeout
        self._max_backoff = max_backoff
        self._api_client = _new_api_client(settings, environ, token_file, ca_file)
        self._v1 = _kube().client.CoreV1Api(self._api_client)
        self._lock = threading.Lock()
        self._cache: dict[_Key, dict[str, str] | None] = {}
        self._synced: Counter[_Key] = Counter()
        self._stops: list[Callable[[], None]] = []

    def get_secret(self, path: str, key: str | None = None) -> Any:
        ref = self._ref(path)
        with self._lock:
            cached = self._cache.get(ref, _UNKNOWN) if self._synced[ref] else _UNKNOWN
        data = self._read(ref) if cached is _UNKNOWN else cast("dict[str, str] | None", cached)
        if data is None:
            raise SecretNotFound(f"kubernetes secret '{_show(ref)}' not found")
        if key is None:
            return dict(data)
        if key not in data:
            raise SecretNotFound(f"kubernetes secret '{_show(ref)}' has no key '{key}'")
        return data[key]

    def watch(self, paths: Sequence[str], on_change: Callable[[str], None]) -> Callable[[], None]:
        if not self._settings.watch:
            return lambda: None
        refs = {self._ref(p): p for p in paths}
        group = _WatchGroup(self, on_change)
        for ref, path in refs.items():
            group.start(ref, path)
        with self._lock:
            self._stops.append(group.stop)
        return group.stop

    def check(self) -> str:
        namespace = self._settings.namespace
        try:
            found = self._v1.list_namespaced_secret(
                namespace, limit=1, _request_timeout=self._timeout
            )
        except Exception as exc:
            raise _translate(exc, f"namespace '{namespace}'") from None
        host = self._api_client.configuration.host
        return f"ok: {host}, secrets of namespace '{namespace}' readable ({len(found.items)} seen)"

    def close(self) -> None:
        with self._lock:
            stops, self._stops = self._stops, []
        for stop in stops:
            stop()
        self._api_client.close()

    # --- used by the watch threads -------------------------------------------------------

    def _ref(self, path: str) -> _Key:
        namespace, _, name = path.strip().rpartition("/")
        if not name or "/" in namespace:
            raise ValueError(f"invalid kubernetes secret path {path!r}: use NAME or NAMESPACE/NAME")
        return namespace or self._settings.namespace, name

    def _read(self, ref: _Key) -> dict[str, str] | None:
        try:
            secret = self._v1.read_namespaced_secret(ref[1], ref[0], _request_timeout=self._timeout)
        except _kube().client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise _translate(exc, f"secret '{_show(ref)}'") from None
        except Exception as exc:
            raise _translate(exc, f"secret '{_show(ref)}'") from None
        data = _decode(ref, secret.data)
        with self._lock:
            self._cache[ref] = data
        return data

    def _relist(self, ref: _Key) -> tuple[str, dict[str, str] | None]:
        """List the one Secret; return the list's resourceVersion and the decoded data."""
        found = self._v1.list_namespaced_secret(
            ref[0], field_selector=f"metadata.name={ref[1]}", _request_timeout=self._timeout
        )
        items = [s for s in found.items if s.metadata.name == ref[1]]
        data = _decode(ref, items[0].data) if items else None
        return str(found.metadata.resource_version), data

    def _cached(self, ref: _Key) -> object:
        with self._lock:
            return self._cache.get(ref, _UNKNOWN)

    def _store(self, ref: _Key, data: dict[str, str] | None) -> None:
        with self._lock:
            self._cache[ref] = data

    def _set_synced(self, ref: _Key, synced: bool) -> bool:
        with self._lock:
            self._synced[ref] += 1 if synced else -1
        return synced


class _WatchGroup:
    """The threads started by one `watch()` call, stopped together."""

    def __init__(self, backend: KubernetesSecretsBackend, on_change: Callable[[str], None]):
        self._backend, self._on_change = backend, on_change
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: dict[_Key, dict[str, str] | None] = {}  # what this group last reported
        self._watches: set[Any] = set()
        self._lock = threading.Lock()

    def start(self, ref: _Key, path: str) -> None:
        name = f"mira-k8s-watch-{_show(ref)}"
        thread = threading.Thread(target=self._run, args=(ref, path), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stopping.set()
        others = [t for t in self._threads if t is not threading.current_thread()]
        deadline = time.monotonic() + 5
        while any(t.is_alive() for t in others) and time.monotonic() < deadline:
            with self._lock:
                watches = list(self._watches)
            for w in watches:
                w.stop()  # shuts the socket down; repeated as a watch may be mid-connect
            for thread in others:
                thread.join(timeout=0.05)

    def _run(self, ref: _Key, path: str) -> None:
        api_exception = _kube().client.exceptions.ApiException
        backoff, synced, rv = _MIN_BACKOFF, False, None
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                if rv is None:
                    rv, data = self._backend._relist(ref)
                    self._apply(ref, path, data)
                    synced = synced or self._backend._set_synced(ref, True)
                rv = self._stream(ref, path, rv)
                if time.monotonic() - started > 1:
                    backoff = _MIN_BACKOFF
                    continue
            except api_exception as exc:
                rv = None
                if exc.status == 410:
                    log.info("kubernetes_watch_expired", secret=_show(ref))
                    continue
                log.warning("kubernetes_watch_failed", secret=_show(ref), status=exc.status)
            except Exception:
                rv = None
                if not self._stopping.is_set():
                    log.warning("kubernetes_watch_failed", secret=_show(ref), exc_info=True)
            if rv is None and synced:
                synced = self._backend._set_synced(ref, False)
            # Each retry starts with a re-list, so a failing watch still polls the Secret.
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, self._backend._max_backoff)
        if synced:
            self._backend._set_synced(ref, False)

    def _stream(self, ref: _Key, path: str, rv: str) -> str:
        backend = self._backend
        w = _kube().watch.Watch()
        with self._lock:
            self._watches.add(w)
        try:
            if self._stopping.is_set():
                return rv
            events = w.stream(
                backend._v1.list_namespaced_secret,
                ref[0],
                field_selector=f"metadata.name={ref[1]}",
                resource_version=rv,
                timeout_seconds=backend._watch_timeout,
                _request_timeout=(backend._timeout, backend._watch_timeout + backend._timeout),
            )
            for event in events:
                if self._stopping.is_set():
                    break
                if not isinstance(event, dict):
                    continue  # a blank keep-alive line
                raw = event["raw_object"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._apply(ref, path, _decode(ref, raw.get("data")))
                elif event["type"] == "DELETED":
                    self._apply(ref, path, None)
                rv = w.resource_version or rv
        finally:
            with self._lock:
                self._watches.discard(w)
        return rv

    def _apply(self, ref: _Key, path: str, data: dict[str, str] | None) -> None:
        previous = self._seen.get(ref, _UNKNOWN)
        if previous is _UNKNOWN:
            # First list: compare with what get_secret last served, so a rotation between the
            # caller's read and the watch's start is still reported.
            previous = self._backend._cached(ref)
        self._backend._store(ref, data)
        self._seen[ref] = data
        if previous is _UNKNOWN or previous == data:
            return
        log.info("kubernetes_secret_changed", secret=_show(ref), deleted=data is None)
        try:
            self._on_change(path)
        except Exception:
            log.exception("kubernetes_on_change_failed", secret=_show(ref))


def _new_api_client(
    settings: KubernetesSecretsSettings, environ: Mapping[str, str], token_file: str, ca_file: str
) -> Any:
    """A dedicated ApiClient (never the global default configuration)."""
    client, config = _kube().client, _kube().config
    configuration = client.Configuration()
    configuration.retries = 1  # one retry covers a stale pooled connection; fail fast otherwise
    try:
        if settings.kubeconfig:
            return config.new_client_from_config(
                config_file=settings.kubeconfig,
                context=settings.context,
                persist_config=False,
                client_configuration=configuration,
            )
        loader = config.incluster_config.InClusterConfigLoader(
            token_filename=token_file, cert_filename=ca_file, environ=environ
        )
        loader.load_and_set(configuration)
        _strip_token_newline(configuration)
        return client.ApiClient(configuration)
    except (config.ConfigException, OSError) as exc:
        where = settings.kubeconfig or "in-cluster service account"
        raise SecretsBackendUnavailable(f"kubernetes configuration ({where}): {exc}") from None


def _strip_token_newline(configuration: Any) -> None:
    """Drop the trailing newline of a hand-written token file (the client would send it)."""
    reload_token = configuration.refresh_api_key_hook

    def refresh(cfg: Any) -> None:
        if reload_token is not None:
            reload_token(cfg)
        if token := cfg.api_key.get("BearerToken"):
            cfg.api_key["BearerToken"] = token.rstrip()

    refresh(configuration)
    configuration.refresh_api_key_hook = refresh


def _kube() -> Any:
    """The kubernetes package, imported on first use only (importing it costs ~240 ms)."""
    import kubernetes

    return kubernetes


def _decode(ref: _Key, data: Mapping[str, Any] | None) -> dict[str, str]:
    try:
        return {k: base64.b64decode(v).decode("utf-8") for k, v in (data or {}).items()}
    except (binascii.Error, UnicodeDecodeError):
        raise SecretsBackendUnavailable(
            f"kubernetes secret '{_show(ref)}' holds data that is not base64 UTF-8 text"
        ) from None


def _translate(exc: Exception, what: str) -> SecretsBackendUnavailable:
    """Map a client error to SecretsBackendUnavailable without echoing response bodies."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return SecretsBackendUnavailable(f"kubernetes API refused access to {what} (HTTP {status})")
    if status is not None:
        return SecretsBackendUnavailable(f"kubernetes API error reading {what} (HTTP {status})")
    return SecretsBackendUnavailable(
        f"kubernetes API unreachable reading {what}: {type(exc).__name__}"
    )


def _show(ref: _Key) -> str:
    return f"{ref[0]}/{ref[1]}"
