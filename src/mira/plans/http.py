"""HTTP for the integrations: urllib3's Retry mounted on a requests session, credential-free errors.

urllib3 carries out the retries (counting, Retry-After, capped jittered back-off, connect vs
read errors). `IntegrationRetry` only states Mira's rules on top of it: a request that changes
state (POST) is repeated only where it cannot have been carried out (429, 503, no connection
made), and GitHub's rate-limit 403 is waited out like a 429.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from mira.adapters.log_sink import Redactor
from mira.plans.ports import IntegrationError

log = structlog.get_logger("mira.integrations")

#: statuses after which a request that changes state surely was not carried out
SAFE_TO_REPEAT = frozenset({429, 503})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
BACKOFF_FACTOR, BACKOFF_MAX, BACKOFF_JITTER, RETRY_AFTER_MAX = 0.2, 5.0, 0.1, 30


def _rate_limited(headers: Any) -> bool:
    return "Retry-After" in headers or headers.get("X-RateLimit-Remaining") == "0"


class IntegrationRetry(Retry):
    """urllib3's Retry with Mira's rules; `integration` names it in the retry log line."""

    def __init__(
        self,
        *args: Any,
        integration: str = "",
        sleeper: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.integration = integration
        self.sleeper = sleeper

    def new(self, **kw: Any) -> Self:
        kw.setdefault("integration", self.integration)
        kw.setdefault("sleeper", self.sleeper)
        return super().new(**kw)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code in SAFE_TO_REPEAT or status_code == 403:  # 403: see increment
            return True
        return status_code >= 500 and method.upper() in IDEMPOTENT

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if response is not None and response.status == 403 and not _rate_limited(response.headers):
            # Not a rate limit: no retry, the 403 is answered as it is (raise_on_status=False).
            raise MaxRetryError(_pool, url or "", ResponseError("403"))  # type: ignore[arg-type]
        sent = error is not None and not self._is_connection_error(error)
        if sent and (method or "").upper() not in IDEMPOTENT:
            raise error  # type: ignore[misc]  # it may have been carried out: never repeat it
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        """Retry-After (seconds or HTTP date), else GitHub's X-RateLimit-Reset; both capped."""
        try:
            hinted = super().get_retry_after(response)
        except InvalidHeader:
            hinted = None
        reset = response.headers.get("X-RateLimit-Reset", "")
        exhausted = response.headers.get("X-RateLimit-Remaining") == "0"
        if hinted is None and exhausted and reset.isdigit():
            hinted = min(float(self.retry_after_max), max(0.0, int(reset) - time.time()))
        return hinted

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        hinted = self.get_retry_after(response) if response is not None else None
        delay = hinted or self.get_backoff_time()
        last = self.history[-1] if self.history else None
        log.warning(
            "integration_retry",
            integration=self.integration,
            method=last.method if last else None,
            path=urlsplit(last.url or "").path if last else None,
            status=last.status if last else None,
            attempt=len(self.history),
            delay=round(delay, 3),
        )
        if delay > 0:
            self.sleeper(delay)


def retry_policy(
    integration: str, max_retries: int, sleep: Callable[[float], None] | None = None
) -> IntegrationRetry:
    return IntegrationRetry(
        total=max_retries,
        allowed_methods=IDEMPOTENT,
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=BACKOFF_MAX,
        backoff_jitter=BACKOFF_JITTER,
        retry_after_max=RETRY_AFTER_MAX,
        raise_on_status=False,  # the last answer comes back and is reported with its text
        integration=integration,
        sleeper=sleep or time.sleep,
    )


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.reason or "").strip()
    if isinstance(body, dict):
        parts = [body.get("message"), *body.get("errorMessages", [])]
        parts += [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
        return "; ".join(str(p) for p in parts if p)[:300] or (response.reason or "")
    return response.reason or ""


class Caller:
    """Sends requests through one retrying session; errors name no credential.

    `observe(integration, "ok" | "error", seconds)` is called after each call (metrics);
    `close()` closes the session once the calls in flight have ended.
    """

    def __init__(
        self,
        integration: str,
        retry: Retry,
        timeout: float,
        headers: dict[str, str],
        secrets: Iterable[str],
        session: requests.Session | None = None,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.integration = integration
        self.session = session or requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.timeout = timeout
        self._headers = headers
        self._redact = Redactor()
        self._redact.set_secrets(secrets)
        self.observe = observe
        self._inflight = 0
        self._closing = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Caller({self.integration!r})"

    def close(self) -> None:
        with self._lock:
            self._closing = True
            idle = self._inflight == 0
        if idle:
            self.session.close()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send (urllib3 retries what may be retried); IntegrationError for any final failure."""
        with self._lock:
            self._inflight += 1
        started = time.perf_counter()
        result = "error"
        try:
            response = self._send(method, url, kwargs)
            result = "ok"
            return response
        finally:
            if self.observe is not None:
                self.observe(self.integration, result, time.perf_counter() - started)
            with self._lock:
                self._inflight -= 1
                last = self._closing and self._inflight == 0
            if last:
                self.session.close()

    def _send(self, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        try:
            response = self.session.request(
                method, url, headers=self._headers, timeout=self.timeout, **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            problem = f"{type(exc).__name__} talking to {_origin(url)}"
            raise self._error(None, problem, "the service could not be reached") from None
        status = response.status_code
        if status < 400:
            return response
        problem = f"{urlsplit(url).path}: {_error_text(response)}"
        if status == 401:
            problem = f"credentials rejected ({problem}); check the configured token"
            raise self._error(status, problem, "credentials rejected; check the configured token")
        raise self._error(status, problem, "the service answered with an error")

    def _error(self, status: int | None, problem: str, public: str) -> IntegrationError:
        text = self._redact(problem.encode()).decode()
        return IntegrationError(self.integration, status, text, public)


def is_http_url(url: str | None) -> bool:
    """True for an absolute http(s) URL with a host (what a base URL setting must be)."""
    parts = urlsplit(url or "")
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
