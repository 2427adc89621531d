"""Vault / OpenBao secrets backend (hvac): KV v1/v2 reads, token/AppRole/Kubernetes auth."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
import structlog
from hvac import exceptions as hvac_errors

from mira.domain.config.model import VaultSettings
from mira.domain.ports import SecretNotFound, SecretsBackend, SecretsBackendUnavailable

log = structlog.get_logger("mira.secrets.vault")
T = TypeVar("T")

MAX_IDLE_WAIT = 1.0  # the renewal thread re-reads its schedule at least this often (seconds)
MAX_RETRY_DELAY = 30.0
STANDBY_CODES = (429, 472, 473)


class VaultSecretsBackend(SecretsBackend):
    """Reads KV secrets through one reused hvac client and keeps its token alive."""

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
        self._auth = settings.auth
        self._environ = environ
        self._clock = clock
        verify: bool | str = (settings.ca_file or True) if settings.verify else False
        self._client = hvac.Client(
            url=settings.url, verify=verify, timeout=settings.timeout, namespace=settings.namespace
        )
        self._lock = threading.RLock()
        self._logged_in = False
        self._renewable = False
        self._full_ttl = 0
        self._expires_at: float | None = None
        self._due_at: float | None = clock()
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> None:
        """Log in now (a failure is logged and retried) and start the token renewal thread."""
        try:
            self._ensure_login()
        except SecretsBackendUnavailable as exc:
            log.warning("vault_login_failed", auth_method=self._auth.method, error=str(exc))
        self._start_renewal()

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
        """Seconds the current token has left; None before login or for a non-expiring token."""
        expires_at = self._expires_at
        return None if expires_at is None else max(0.0, expires_at - self._clock())

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
            f"{self._auth.method} auth, token ttl {ttl}"
        )

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._settings.timeout + 1)
        self._client.adapter.close()

    # -- reads --------------------------------------------------------------------------------

    def _read(self, path: str) -> tuple[dict[str, str], int | None]:
        """The secret at `path` as strings, and its KV v2 version (None on KV v1)."""
        mount = self._settings.mount_point
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
        return _strings(raw["data"]["data"]), int(raw["data"]["metadata"]["version"])

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` logged in; on 403 log in again once and retry once; translate errors."""
        self._ensure_login()
        seen_token = self._client.token
        try:
            return self._request(what, action)
        except _Denied:
            with self._lock:
                if self._client.token == seen_token:
                    self._login("forbidden")
            try:
                return self._request(what, action)
            except _Denied as exc:
                raise SecretsBackendUnavailable(
                    f"Vault denied {what}: permission denied (token invalid or policy forbids it)"
                ) from exc.__cause__

    def _request(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except hvac_errors.InvalidPath as exc:
            raise SecretNotFound(
                f"Vault {what} not found at mount {self._settings.mount_point!r}"
            ) from exc
        except hvac_errors.Forbidden as exc:
            raise _Denied from exc
        except (hvac_errors.VaultError, requests.RequestException) as exc:
            raise SecretsBackendUnavailable(
                f"Vault at {self._settings.url} failed {what}: {self._describe(exc)}"
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

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, requests.Timeout):
            return f"no answer within {self._settings.timeout}s"
        if isinstance(exc, requests.exceptions.SSLError):
            return "TLS verification failed (check secrets.vault.ca_file)"
        if isinstance(exc, requests.ConnectionError):
            return "connection failed (server down or unreachable)"
        if isinstance(exc, hvac_errors.VaultDown):
            return "server sealed or unavailable (HTTP 503)"
        if isinstance(exc, hvac_errors.VaultError) and exc.errors:
            return f"{type(exc).__name__}: {'; '.join(map(str, exc.errors))[:200]}"
        return type(exc).__name__

    # -- authentication -----------------------------------------------------------------------

    def _ensure_login(self) -> None:
        if not self._logged_in:
            with self._lock:
                if not self._logged_in:
                    self._login("startup")
            self._start_renewal()  # a backend used without start() still keeps its token alive

    def _start_renewal(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="mira-vault-renew", daemon=True
                )
                self._thread.start()

    def _login(self, reason: str) -> None:
        method, auth = self._auth.method, self._auth
        try:
            if method == "approle":
                mount = auth.mount_path or "approle"
                self._client.auth.approle.login(auth.role_id, self._secret_id(), mount_point=mount)
            elif method == "kubernetes":
                jwt = _read_file(auth.token_file, "auth.token_file")
                mount = auth.mount_path or "kubernetes"
                self._client.auth.kubernetes.login(auth.role, jwt, mount_point=mount)
            else:
                self._client.token = self._settings.token
            self._track(self._client.auth.token.lookup_self()["data"])
        except hvac_errors.Forbidden as exc:
            self._logged_in = False
            raise SecretsBackendUnavailable(
                f"Vault {method} login failed: permission denied (token or credentials invalid, "
                "expired or revoked)"
            ) from exc
        except (hvac_errors.VaultError, requests.RequestException) as exc:
            self._logged_in = False
            raise SecretsBackendUnavailable(
                f"Vault {method} login at {self._settings.url} failed: {self._describe(exc)}"
            ) from exc
        self._logged_in = True
        log.info(
            "vault_login",
            auth_method=method,
            reason=reason,
            ttl_seconds=self.token_ttl_seconds(),
            renewable=self._renewable,
        )

    def _secret_id(self) -> str:
        auth = self._auth
        if auth.secret_id:
            return auth.secret_id
        if auth.secret_id_file:
            return _read_file(auth.secret_id_file, "auth.secret_id_file")
        if value := self._environ.get(auth.secret_id_env, "").strip():
            return value
        raise SecretsBackendUnavailable(
            "Vault AppRole login needs a secret_id: set secrets.vault.auth.secret_id, "
            f"auth.secret_id_file or the {auth.secret_id_env} environment variable"
        )

    def _track(self, token: Mapping[str, Any]) -> None:
        """Schedule renewal from `lookup_self` data (ttl 0, no expire_time: never expires)."""
        self._renewable = bool(token.get("renewable"))
        ttl = int(token.get("ttl") or 0)
        self._full_ttl = int(token.get("creation_ttl") or ttl)
        if token.get("expire_time") is None and ttl == 0:
            self._expires_at = self._due_at = None
        else:
            self._schedule(ttl)

    def _schedule(self, ttl: int) -> None:
        now = self._clock()
        self._expires_at = now + ttl
        self._due_at = now + ttl * self._settings.renew_fraction

    # -- renewal thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self._wait_seconds()):
            due = self._due_at
            if due is None or self._clock() < due:
                continue
            try:
                with self._lock:
                    self._refresh()
                self._failures = 0
            except SecretsBackendUnavailable as exc:
                self._retry_later(str(exc))
            except Exception:
                log.exception("vault_renewal_crashed", auth_method=self._auth.method)
                self._retry_later("unexpected error")

    def _wait_seconds(self) -> float:
        due = self._due_at
        return MAX_IDLE_WAIT if due is None else min(max(due - self._clock(), 0.0), MAX_IDLE_WAIT)

    def _retry_later(self, error: str) -> None:
        self._failures += 1
        delay = min(0.25 * 2**self._failures, MAX_RETRY_DELAY)
        if (left := self.token_ttl_seconds()) is not None and left > 0:
            delay = min(delay, max(left / 2, 0.1))
        self._due_at = self._clock() + delay
        log.warning(
            "vault_token_refresh_failed",
            auth_method=self._auth.method,
            error=error,
            retry_in_seconds=round(delay, 2),
            failures=self._failures,
        )

    def _refresh(self) -> None:
        method = self._auth.method
        if not self._logged_in:
            self._login("retry")
            return
        if method != "token" and not self._renewable:
            self._login("not_renewable")
            return
        try:
            ttl = int(self._client.auth.token.renew_self()["auth"]["lease_duration"])
        except (hvac_errors.Forbidden, hvac_errors.InvalidRequest) as exc:
            if method == "token":
                log.error(
                    "vault_token_renewal_refused", auth_method=method, error=type(exc).__name__
                )
                raise SecretsBackendUnavailable("Vault refused to renew the token") from exc
            log.warning("vault_token_renewal_refused", auth_method=method)
            self._login("renewal_refused")
            return
        except (hvac_errors.VaultError, requests.RequestException) as exc:
            raise SecretsBackendUnavailable(f"token renewal failed: {self._describe(exc)}") from exc
        self._schedule(ttl)
        log.info("vault_token_renewed", auth_method=method, ttl_seconds=ttl)
        if ttl < self._full_ttl:  # capped by the max TTL: renewing cannot extend it any more
            if method == "token":
                log.error("vault_token_near_max_ttl", auth_method=method, ttl_seconds=ttl)
            else:
                self._login("max_ttl")


class _Denied(Exception):
    """Internal: the server answered 403."""


def _validate(settings: VaultSettings) -> None:
    auth = settings.auth
    if not settings.url.startswith(("http://", "https://")):
        raise ValueError(
            f"secrets.vault.url must start with http:// or https://, got {settings.url!r}"
        )
    if auth.method == "token" and not settings.token:
        raise ValueError(
            "secrets.vault.token (or MIRA_VAULT_TOKEN / VAULT_TOKEN) is required for token auth"
        )
    if auth.method == "approle" and not auth.role_id:
        raise ValueError("secrets.vault.auth.role_id is required for approle auth")
    if auth.method == "kubernetes" and not auth.role:
        raise ValueError("secrets.vault.auth.role is required for kubernetes auth")


def _read_file(path: str, setting: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretsBackendUnavailable(f"cannot read {setting} {path}: {exc.strerror}") from None
    if not value:
        raise SecretsBackendUnavailable(f"{setting} {path} is empty")
    return value


def _strings(data: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in (data or {}).items()}
