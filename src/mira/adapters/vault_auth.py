"""Vault / OpenBao login and token renewal (hvac): token, AppRole and Kubernetes auth."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hvac
import requests
import structlog
from hvac import exceptions as hvac_errors

from mira.domain.config.model import VaultSettings
from mira.domain.ports import SecretsBackendUnavailable

log = structlog.get_logger("mira.secrets.vault")
T = TypeVar("T")

MAX_IDLE_WAIT = 1.0  # the renewal thread re-reads its schedule at least this often (seconds)
MAX_RETRY_DELAY = 30.0


class Denied(Exception):
    """The server answered 403 (raised by a request; `VaultAuth.call` logs in again once)."""


def describe_error(exc: Exception, timeout: float) -> str:
    """A short, value-free description of a failed Vault request."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout}s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed (check secrets.vault.ca_file)"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed (server down or unreachable)"
    if isinstance(exc, hvac_errors.VaultDown):
        return "server sealed or unavailable (HTTP 503)"
    if isinstance(exc, hvac_errors.VaultError) and exc.errors:
        return f"{type(exc).__name__}: {'; '.join(map(str, exc.errors))[:200]}"
    return type(exc).__name__


class VaultAuth:
    """Keeps `client` logged in: logs in on first use, renews early, logs in again on 403."""

    def __init__(
        self,
        settings: VaultSettings,
        environ: Mapping[str, str],
        client: hvac.Client,
        clock: Callable[[], float],
    ) -> None:
        self._settings, self._auth, self._environ = settings, settings.auth, environ
        self._client, self._clock = client, clock
        self._lock = threading.RLock()
        self._logged_in = False
        self._renewable = False
        self._never_expires = False
        self._full_ttl = 0
        self._expires_at: float | None = None
        self._due_at: float | None = clock()
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Log in now (a failure is logged and retried) and start the token renewal thread."""
        try:
            self.ensure_login()
        except SecretsBackendUnavailable as exc:
            log.warning("vault_login_failed", auth_method=self._auth.method, error=str(exc))
        self._start_renewal()

    def token_ttl_seconds(self) -> float | None:
        """Seconds the token has left: +inf for a token that never expires, None if unknown."""
        if not self._logged_in:
            return None
        if self._never_expires:
            return float("inf")
        expires_at = self._expires_at
        return None if expires_at is None else max(0.0, expires_at - self._clock())

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._settings.timeout + 1)

    def call(self, what: str, request: Callable[[], T]) -> T:
        """Run `request` logged in; on `Denied` log in again once and retry once."""
        self.ensure_login()
        seen_token = self._client.token
        try:
            return request()
        except Denied:
            with self._lock:
                if self._client.token == seen_token:
                    self._login("forbidden")
            try:
                return request()
            except Denied as exc:
                raise SecretsBackendUnavailable(
                    f"Vault denied {what}: permission denied (token invalid or policy forbids it)"
                ) from exc.__cause__

    def ensure_login(self) -> None:
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
                f"Vault {method} login at {self._settings.url} failed: "
                f"{describe_error(exc, self._settings.timeout)}"
            ) from exc
        self._logged_in = True
        ttl = self.token_ttl_seconds()
        log.info(
            "vault_login",
            auth_method=method,
            reason=reason,
            ttl_seconds=None if self._never_expires else ttl,
            expires=not self._never_expires,
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
        self._never_expires = token.get("expire_time") is None and ttl == 0
        if self._never_expires:
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
            raise SecretsBackendUnavailable(
                f"token renewal failed: {describe_error(exc, self._settings.timeout)}"
            ) from exc
        self._schedule(ttl)
        log.info("vault_token_renewed", auth_method=method, ttl_seconds=ttl)
        if ttl < self._full_ttl:  # capped by the max TTL: renewing cannot extend it any more
            if method == "token":
                log.error("vault_token_near_max_ttl", auth_method=method, ttl_seconds=ttl)
            else:
                self._login("max_ttl")


def _read_file(path: str, setting: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretsBackendUnavailable(f"cannot read {setting} {path}: {exc.strerror}") from None
    if not value:
        raise SecretsBackendUnavailable(f"{setting} {path} is empty")
    return value
