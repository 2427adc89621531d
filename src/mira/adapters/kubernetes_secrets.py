"""Kubernetes Secrets backend: reads via the API; the watches (kubernetes_watch) feed its cache."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from mira.adapters.kubernetes_api import (
    SERVICE_ACCOUNT,
    UNKNOWN,
    Key,
    decode,
    kube,
    new_api_client,
    show,
    translate,
)
from mira.adapters.kubernetes_watch import WatchGroup
from mira.domain.config.model import KubernetesSecretsSettings
from mira.domain.ports import SecretNotFound, SecretsBackend


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
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self._api_client = new_api_client(settings, environ, token_file, ca_file)
        self.v1 = kube().client.CoreV1Api(self._api_client)
        self._lock = threading.Lock()
        self._cache: dict[Key, dict[str, str] | None] = {}
        self._synced: Counter[Key] = Counter()
        self._stops: list[Callable[[], None]] = []

    def get_secret(self, path: str, key: str | None = None) -> Any:
        ref = self._ref(path)
        with self._lock:
            cached = self._cache.get(ref, UNKNOWN) if self._synced[ref] else UNKNOWN
        data = self._read(ref) if cached is UNKNOWN else cast("dict[str, str] | None", cached)
        if data is None:
            raise SecretNotFound(f"kubernetes secret '{show(ref)}' not found")
        if key is None:
            return dict(data)
        if key not in data:
            raise SecretNotFound(f"kubernetes secret '{show(ref)}' has no key '{key}'")
        return data[key]

    def watch(self, paths: Sequence[str], on_change: Callable[[str], None]) -> Callable[[], None]:
        if not self._settings.watch:
            return lambda: None
        refs = {self._ref(p): p for p in paths}
        group = WatchGroup(self, on_change)
        for ref, path in refs.items():
            group.start(ref, path)
        with self._lock:
            self._stops.append(group.stop)
        return group.stop

    def check(self) -> str:
        namespace = self._settings.namespace
        try:
            found = self.v1.list_namespaced_secret(
                namespace, limit=1, _request_timeout=self.request_timeout
            )
        except Exception as exc:
            raise translate(exc, f"namespace '{namespace}'") from None
        host = self._api_client.configuration.host
        return f"ok: {host}, secrets of namespace '{namespace}' readable ({len(found.items)} seen)"

    def close(self) -> None:
        with self._lock:
            stops, self._stops = self._stops, []
        for stop in stops:
            stop()
        self._api_client.close()

    def _ref(self, path: str) -> Key:
        namespace, _, name = path.strip().rpartition("/")
        if not name or "/" in namespace:
            raise ValueError(f"invalid kubernetes secret path {path!r}: use NAME or NAMESPACE/NAME")
        return namespace or self._settings.namespace, name

    def _read(self, ref: Key) -> dict[str, str] | None:
        try:
            secret = self.v1.read_namespaced_secret(
                ref[1], ref[0], _request_timeout=self.request_timeout
            )
        except kube().client.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise translate(exc, f"secret '{show(ref)}'") from None
        except Exception as exc:
            raise translate(exc, f"secret '{show(ref)}'") from None
        data = decode(ref, secret.data)
        with self._lock:
            self._cache[ref] = data
        return data

    # -- WatchedCache: used by the watch threads ------------------------------------------

    def relist(self, ref: Key) -> tuple[str, dict[str, str] | None]:
        """List the one Secret; return the list's resourceVersion and the decoded data."""
        found = self.v1.list_namespaced_secret(
            ref[0], field_selector=f"metadata.name={ref[1]}", _request_timeout=self.request_timeout
        )
        items = [s for s in found.items if s.metadata.name == ref[1]]
        data = decode(ref, items[0].data) if items else None
        return str(found.metadata.resource_version), data

    def cached(self, ref: Key) -> object:
        with self._lock:
            return self._cache.get(ref, UNKNOWN)

    def store(self, ref: Key, data: dict[str, str] | None) -> None:
        with self._lock:
            self._cache[ref] = data

    def set_synced(self, ref: Key, synced: bool) -> bool:
        with self._lock:
            self._synced[ref] += 1 if synced else -1
        return synced
