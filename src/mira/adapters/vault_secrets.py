"""Vault / OpenBao secrets backend (hvac): KV v1/v2 reads; login and renewal in vault_auth."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as hvac_errors

from mira.adapters.vault_auth import Denied, VaultAuth, describe_error
from mira.domain.config.model import VaultSettings
from mira.domain.config.schema import quote
from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable

T = TypeVar("T")

STANDBY_CODES = (429, 472, 473)
VERSIONED_PATH_WARNING = "Invalid path for a versioned K/V secrets engine"


class VaultSecretsBackend(SecretsBackend):
    """Reads KV secrets through one reused hvac client; `VaultAuth` keeps its token alive."""

    name = "vault"

    def __init__(
        self,
        settings: VaultSettings,
        environ: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _validate(settings)
        self._settings = settings
        verify: bool | str = (settings.ca_file or True) if settings.verify else False
        self._client = hvac.Client(
            url=settings.url, verify=verify, timeout=settings.timeout, namespace=settings.namespace
        )
        self._auth = VaultAuth(settings, environ, self._client, clock)

    def start(self) -> None:
        """Log in now (a failure is logged and retried) and start the token renewal thread."""
        self._auth.start()

    def get_secret(self, path: str, key: str | None = None) -> dict[str, str] | str:
        data, _ = self._read(path)
        if key is None:
            return data
        if key not in data:
            raise SecretNotFound(f"Vault secret {path!r} has no key {key!r}")
        return data[key]

    def get_secret_version(self, path: str) -> str | None:
        """The current KV v2 version of `path` (None on KV v1, which has no versions)."""
        _, version = self._read(path)
        return None if version is None else str(version)

    def token_ttl_seconds(self) -> float | None:
        """Seconds the token has left: +inf for a token that never expires, None if unknown."""
        return self._auth.token_ttl_seconds()

    def check(self) -> str:
        health = self._request(
            "health check", lambda: self._client.sys.read_health_status(method="GET")
        )
        if not isinstance(health, dict):
            health = self._unhealthy(health)
        data = self._call("token lookup", lambda: self._client.auth.token.lookup_self()["data"])
        ttl = "none" if data.get("expire_time") is None else f"{data['ttl']}s"
        return (
            f"vault {self._settings.url}: unsealed, version {health.get('version', '?')}, "
            f"{self._settings.auth.method} auth, token ttl {ttl}"
        )

    def close(self) -> None:
        self._auth.close()
        self._client.adapter.close()

    def _read(self, path: str) -> tuple[dict[str, str], int | None]:
        """The secret at `path` as strings, and its KV v2 version (None on KV v1)."""
        mount = self._settings.mount_point
        try:
            if self._settings.kv_version == 1:
                kv1 = self._client.secrets.kv.v1
                raw = self._call(
                    f"secret {path!r}", lambda: kv1.read_secret(path=path, mount_point=mount)
                )
                return _strings(raw["data"]), None
            kv2 = self._client.secrets.kv.v2
            raw = self._call(
                f"secret {path!r}",
                lambda: kv2.read_secret_version(
                    path=path, mount_point=mount, raise_on_deleted_version=True
                ),
            )
        except SecretNotFound as exc:
            raise self._mismatch(path, exc) from exc.__cause__
        return _strings(raw["data"]["data"]), int(raw["data"]["metadata"]["version"])

    def _mismatch(self, path: str, not_found: SecretNotFound) -> SecretNotFound:
        """`not_found`, or an error naming the KV version mismatch that caused it."""
        configured = self._settings.kv_version
        actual = self._mount_version(not_found)
        if actual is None or actual == configured:
            return not_found
        mount = self._settings.mount_point
        return SecretNotFound(
            f"Vault secret {path!r}: mount {mount!r} is a KV version {actual} engine, but "
            f"secrets.vault.kv_version is {configured}; set secrets.vault.kv_version to {actual}"
        )

    def _mount_version(self, not_found: SecretNotFound) -> int | None:
        """The KV version of the mount, from the 404's warning or the mount's description."""
        cause = not_found.__cause__
        if VERSIONED_PATH_WARNING in str(cause or ""):
            return 2
        mount = self._settings.mount_point.strip("/")
        try:  # readable by any token that may read the mount; None when it may not
            raw = self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
        except (hvac_errors.VaultError, requests.RequestException):
            return None
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict) or data.get("type") not in ("kv", "generic"):
            return None
        version = str((data.get("options") or {}).get("version") or "1")
        return int(version) if version in ("1", "2") else None

    def _call(self, what: str, action: Callable[[], T]) -> T:
        return self._auth.call(what, lambda: self._request(what, action))

    def _request(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except hvac_errors.InvalidPath as exc:
            raise SecretNotFound(
                f"Vault {what} not found at mount {self._settings.mount_point!r}"
            ) from exc
        except hvac_errors.Forbidden as exc:
            raise Denied from exc
        except (hvac_errors.VaultError, requests.RequestException) as exc:
            raise SecretsBackendUnavailable(
                f"Vault at {self._settings.url} failed {what}: "
                f"{describe_error(exc, self._settings.timeout)}"
            ) from exc

    def _unhealthy(self, response: requests.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code in STANDBY_CODES:
            return body
        reason = (
            "is sealed" if body.get("sealed") else f"is unhealthy (HTTP {response.status_code})"
        )
        if body.get("initialized") is False:
            reason = "is not initialized"
        raise SecretsBackendUnavailable(f"Vault at {self._settings.url} {reason}")


def _validate(settings: VaultSettings) -> None:
    auth = settings.auth
    if not settings.url.startswith(("http://", "https://")):
        raise ValueError(
            f"secrets.vault.url must start with http:// or https://, got {quote(settings.url)}"
        )
    if auth.method == "token" and not settings.token:
        raise ValueError(
            "secrets.vault.token (or MIRA_VAULT_TOKEN / VAULT_TOKEN) is required for token auth"
        )
    if auth.method == "approle" and not auth.role_id:
        raise ValueError("secrets.vault.auth.role_id is required for approle auth")
    if auth.method == "kubernetes" and not auth.role:
        raise ValueError("secrets.vault.auth.role is required for kubernetes auth")


def _strings(data: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in (data or {}).items()}
