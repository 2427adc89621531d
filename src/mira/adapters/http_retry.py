"""HTTP calls for integrations: capped exponential back-off, Retry-After, credential-free errors."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog
from urllib3.exceptions import NewConnectionError

from mira.domain.messages import MessageError

log = structlog.get_logger("mira.integrations")

#: statuses after which a request that changes state surely was not carried out
SAFE_TO_REPEAT = frozenset({429, 503})


class IntegrationError(MessageError):
    """A call to GitHub or Jira failed; the message never contains a credential."""

    status = 502  # the HTTP answer Mira gives: the upstream service failed

    def __init__(self, integration: str, status: int | None, message: str) -> None:
        super().__init__(f"{integration}: {message}" + (f" (HTTP {status})" if status else ""))
        self.integration = integration
        self.upstream_status = status
        self.message = message


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before repeating a failed call."""

    max_retries: int = 3
    base: float = 0.2
    cap: float = 5.0
    retry_after_cap: float = 30.0
    jitter: float = 0.1
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (0-based) when the server gave no hint."""
        return min(self.cap, self.base * 2.0**attempt + self.jitter * self.rand())

    def delay(self, attempt: int, retry_after: str | None, now: float) -> float:
        """Retry-After (seconds or HTTP date, capped) wins over the computed back-off."""
        hinted = parse_retry_after(retry_after, now) if retry_after else None
        if hinted is None:
            return self.backoff(attempt)
        return min(self.retry_after_cap, hinted)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a Retry-After header; None when it cannot be read."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def retryable(status: int | None, idempotent: bool, sent: bool = True) -> bool:
    """None stands for a connection error or timeout; `sent` False: no connection was made."""
    if not sent:
        return True
    if status is None or status == 429 or status >= 500:
        return idempotent or status in SAFE_TO_REPEAT
    return False


def _never_sent(exc: requests.RequestException) -> bool:
    """Connection refused or connect timeout: the server cannot have acted on the request."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "**********")
    return text


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


@dataclass
class Caller:
    """Sends requests through one session with the retry policy; knows what to redact."""

    integration: str
    session: requests.Session
    policy: RetryPolicy
    timeout: float
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    #: called after each request with (integration, "ok" | "error", seconds), e.g. for metrics
    observe: Callable[[str, str, float], None] | None = field(default=None, repr=False)
    _inflight: int = field(default=0, init=False, repr=False)
    _closing: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def close(self) -> None:
        """Close the session now if idle, else when the last call in flight ends."""
        with self._lock:
            self._closing = True
            idle = self._inflight == 0
        if idle:
            self.session.close()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send; retry what may be retried; raise IntegrationError for any final failure."""
        with self._lock:
            self._inflight += 1
        started = time.perf_counter()
        result = "error"
        try:
            response = self._request(method, url, kwargs)
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

    def _request(self, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        idempotent = method.upper() in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        attempt = 0
        while True:
            status, response, problem, sent = self._send_once(method, url, kwargs)
            if response is not None and status is not None and status < 400:
                return response
            if attempt >= self.policy.max_retries or not retryable(status, idempotent, sent):
                raise IntegrationError(self.integration, status, self._describe(status, problem))
            hint = _retry_hint(response, self.clock()) if response is not None else None
            wait = self.policy.delay(attempt, hint, self.clock())
            log.warning(
                "integration_retry",
                integration=self.integration,
                method=method,
                path=_path(url),
                status=status,
                attempt=attempt + 1,
                delay=round(wait, 3),
            )
            self.sleep(wait)
            attempt += 1

    def _send_once(
        self, method: str, url: str, kwargs: dict[str, Any]
    ) -> tuple[int | None, requests.Response | None, str, bool]:
        """One attempt as (status or None, response or None, problem text, request sent)."""
        try:
            response = self.session.request(
                method, url, headers=self.headers, timeout=self.timeout, **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            problem = f"{type(exc).__name__} talking to {_origin(url)}"
            return None, None, problem, not _never_sent(exc)
        status = response.status_code
        if status < 400:
            return status, response, "", True
        if status == 403 and _rate_limited(response):
            status = 429  # GitHub's primary and secondary rate limits answer 403
        return status, response, f"{_path(url)}: {_error_text(response)}", True

    def _describe(self, status: int | None, problem: str) -> str:
        if status == 401:
            problem = f"credentials rejected ({problem}); check the configured token"
        return redact(problem, self.secrets)


def _rate_limited(response: requests.Response) -> bool:
    headers = response.headers
    return "Retry-After" in headers or headers.get("X-RateLimit-Remaining") == "0"


def _retry_hint(response: requests.Response, now: float) -> str | None:
    """Retry-After, or GitHub's X-RateLimit-Reset (epoch seconds) turned into seconds."""
    if "Retry-After" in response.headers:
        return response.headers["Retry-After"]
    reset = response.headers.get("X-RateLimit-Reset", "")
    if reset.isdigit() and response.headers.get("X-RateLimit-Remaining") == "0":
        return str(max(0, int(reset) - int(now)))
    return None


def is_http_url(url: str | None) -> bool:
    """True for an absolute http(s) URL with a host (what a base URL setting must be)."""
    parts = urlsplit(url or "")
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _path(url: str) -> str:
    return urlsplit(url).path


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
