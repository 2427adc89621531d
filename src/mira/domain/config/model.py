"""The typed, immutable settings tree: every key, its type, default and meaning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mira.domain.config.schema import quote, section, setting

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Upper bound of every number (seconds, bytes, counts): a week of seconds is the largest value
#: any key needs; larger ones (1e300) overflow timers.
MAX_SECONDS = 7 * 24 * 3600.0
#: Lower bound of every interval and timeout: a polled interval below it pins a core (1e-9 did),
#: and no request, hook or drain completes in less.
MIN_SECONDS = 0.1
MAX_WORKERS = 256


def _level(value: Any) -> str | None:
    if value.upper() in LEVELS:
        return None
    return f"must be one of {', '.join(LEVELS)}, got {quote(value)}"


def _seconds(value: Any) -> str | None:
    if not MIN_SECONDS <= value <= MAX_SECONDS:
        return (
            f"must be at least {MIN_SECONDS:g} and at most {MAX_SECONDS:g} seconds, "
            f"got {quote(value)}"
        )
    return None


def _body_size(value: Any) -> str | None:
    if not 0 < value <= 1 << 30:
        return f"must be between 1 and {1 << 30} bytes, got {quote(value)}"
    return None


def _header_size(value: Any) -> str | None:
    if not 1024 <= value <= 1 << 24:
        return f"must be between 1024 and {1 << 24} bytes, got {quote(value)}"
    return None


def _retries(value: Any) -> str | None:
    return None if 0 <= value <= 1000 else f"must be between 0 and 1000, got {quote(value)}"


def _non_negative(value: Any) -> str | None:
    if not 0 <= value <= MAX_SECONDS:
        return f"must be between 0 and {MAX_SECONDS:g}, got {quote(value)}"
    return None


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else f"must be a TCP port 0-65535, got {quote(value)}"


def _at_least(minimum: int) -> Any:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}, got {quote(value)}"

    return check


def _workers(value: Any) -> str | None:
    if value == "auto" or 1 <= value <= MAX_WORKERS:
        return None
    return f'must be "auto" or between 1 and {MAX_WORKERS}, got {quote(value)}'


def _non_empty(value: Any) -> str | None:
    return None if value else "must not be empty"


def _tokens(value: Any) -> str | None:
    for index, token in enumerate(value):
        if len(token.strip()) < 8:
            return f"[{index}] must be at least 8 characters (not shown)"
    return None


@dataclass(frozen=True)
class LoggingSettings:
    """Structured logging."""

    level: str = setting(
        "INFO",
        "Minimum level: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).",
        _level,
        normalize=str.upper,
    )
    json_format: bool = setting(True, "One JSON object per line (false: readable console lines).")
    file: str | None = setting(
        None, "Log file path (directory created; reopened after logrotate); null logs to stdout."
    )


@dataclass(frozen=True)
class ReloadSettings:
    """Configuration hot-reload (the `config` section)."""

    hot_reload: bool = setting(False, "Watch the config file and apply valid changes live.")
    poll_interval: float = setting(
        5.0, "Seconds between polls, the fallback where file events are missing.", _seconds
    )
    debounce: float = setting(
        0.05, "Seconds to wait for a burst of file events to settle.", _non_negative
    )


@dataclass(frozen=True)
class VaultAuthSettings:
    """How Mira logs in to Vault."""

    method: Literal["token", "approle", "kubernetes"] = setting(
        "token", "token, approle or kubernetes."
    )
    role_id: str | None = setting(None, "AppRole role_id.")
    secret_id: str | None = setting(
        None, "AppRole secret_id (use a secret:// reference or secret_id_file).", secret=True
    )
    secret_id_file: str | None = setting(
        None, "File holding the AppRole secret_id, re-read at each login."
    )
    secret_id_env: str = setting(
        "VAULT_SECRET_ID", "Environment variable holding the AppRole secret_id."
    )
    role: str | None = setting(None, "Kubernetes auth role.")
    token_file: str = setting(
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "Service-account token file for Kubernetes auth, re-read at each login.",
    )
    mount_path: str | None = setting(
        None, "Auth method mount path (default: approle or kubernetes)."
    )


@dataclass(frozen=True)
class VaultSettings:
    """HashiCorp Vault / OpenBao backend."""

    url: str = setting("http://127.0.0.1:8200", "Vault address (also MIRA_VAULT_URL, VAULT_ADDR).")
    token: str | None = setting(
        None, "Vault token for token auth (also MIRA_VAULT_TOKEN, VAULT_TOKEN).", secret=True
    )
    mount_point: str = setting("secret", "KV secrets engine mount point.")
    kv_version: int = setting(
        2,
        "KV engine version, 1 or 2.",
        lambda v: None if v in (1, 2) else f"must be 1 or 2, got {quote(v)}",
    )
    namespace: str | None = setting(None, "Vault Enterprise namespace.")
    verify: bool = setting(True, "Verify the server's TLS certificate.")
    ca_file: str | None = setting(None, "CA bundle used to verify the server's certificate.")
    timeout: float = setting(10.0, "Seconds per Vault request.", _seconds)
    renew_fraction: float = setting(
        0.5,
        "Renew the token after this fraction of its TTL.",
        lambda v: None if 0 < v < 1 else f"must be between 0 and 1, got {quote(v)}",
    )
    auth: VaultAuthSettings = section(VaultAuthSettings)


@dataclass(frozen=True)
class KubernetesSecretsSettings:
    """Kubernetes Secrets backend."""

    namespace: str = setting("default", "Namespace whose Secrets are read.", _non_empty)
    kubeconfig: str | None = setting(
        None, "Kubeconfig path for local runs; null uses in-cluster config."
    )
    context: str | None = setting(None, "Kubeconfig context.")
    watch: bool = setting(True, "Watch referenced Secrets so rotations land within a second.")


@dataclass(frozen=True)
class FileSecretsSettings:
    """Mounted secret volumes or Docker secrets."""

    directory: str = setting(
        "/run/secrets", "Directory of secrets: <directory>/<path>/<key> or <directory>/<path>."
    )
    watch: bool = setting(True, "Watch the directory for rotations.")


@dataclass(frozen=True)
class SecretsSettings:
    """Secrets management."""

    backend: str = setting(
        "env",
        "env, vault, kubernetes, file, or a dotted path to a SecretsBackend subclass.",
        _non_empty,
    )
    auto_refresh: bool = setting(False, "Re-read secrets periodically and apply rotations live.")
    refresh_interval: float = setting(
        3600.0, "Seconds between refreshes (+-10 % jitter).", _seconds
    )
    max_backoff: float = setting(
        300.0, "Cap of the exponential back-off after failed refreshes (seconds).", _seconds
    )
    stale_after: float | None = setting(
        None,
        "Seconds after which a cached secret counts as stale (default 2 x refresh_interval).",
        lambda v: None if v is None else _seconds(v),
    )
    stale_makes_unready: bool = setting(False, "Report not ready while any secret is stale.")
    vault: VaultSettings = section(VaultSettings)
    kubernetes: KubernetesSecretsSettings = section(KubernetesSecretsSettings)
    file: FileSecretsSettings = section(FileSecretsSettings)


@dataclass(frozen=True)
class GithubSettings:
    """GitHub integration."""

    enabled: bool = setting(False, "Enable the GitHub integration (also MIRA_GITHUB_ENABLED).")
    token: str | None = setting(
        None, "GitHub token, usually secret://...; GITHUB_TOKEN when unset.", secret=True
    )
    base_url: str = setting(
        "https://api.github.com", "REST v3 base URL (GitHub Enterprise: https://HOST/api/v3)."
    )
    timeout: float = setting(10.0, "Seconds per request.", _seconds)
    max_retries: int = setting(3, "Retries on 5xx, 429 and connection errors.", _retries)


@dataclass(frozen=True)
class JiraSettings:
    """Jira integration."""

    enabled: bool = setting(False, "Enable the Jira integration.")
    url: str | None = setting(None, "Jira base URL, e.g. https://example.atlassian.net.")
    username: str | None = setting(None, "Jira user (Cloud: the account e-mail).", secret=True)
    api_token: str | None = setting(
        None, "Jira API token, usually secret://...; JIRA_API_TOKEN when unset.", secret=True
    )
    timeout: float = setting(10.0, "Seconds per request.", _seconds)
    max_retries: int = setting(3, "Retries on 5xx, 429 and connection errors.", _retries)


@dataclass(frozen=True)
class IntegrationsSettings:
    """External integrations."""

    github: GithubSettings = section(GithubSettings)
    jira: JiraSettings = section(JiraSettings)


@dataclass(frozen=True)
class ServerSettings:
    """HTTP server (changes need a restart)."""

    host: str = setting(
        "0.0.0.0",
        'Listen address: IPv4, or IPv6 ("::" takes IPv4 connections too, as a dual-stack '
        'socket; "::1" or "[fd00::5]" take IPv6 only).',
    )
    port: int = setting(5000, "Listen port.", _port)
    threads: int = setting(
        32,
        "Requests the app handles at once (per worker process); a request takes one only once "
        "its body has arrived.",
        _at_least(1),
    )
    max_threads: int | None = setting(
        None,
        "Most Python threads per worker process: those running the app, those waiting for a "
        "request body to arrive, and idle ones (null: 256, at most server.max_connections; "
        "that many slow senders at once hold every thread). Behind a proxy that buffers "
        "request bodies, server.threads is enough.",
        lambda v: None if v is None else _at_least(1)(v),
    )
    request_queue_size: int = setting(1024, "Listen backlog.", _at_least(128))
    max_body_bytes: int = setting(
        1048576, "Largest accepted request body; larger gets 413.", _body_size
    )
    max_header_bytes: int = setting(
        65536,
        "Largest accepted request header block (names and values); larger gets 431.",
        _header_size,
    )
    header_timeout: float = setting(
        10.0,
        "Seconds a connection may take to send a request's headers, or stay idle between "
        "requests; then it is closed.",
        _seconds,
    )
    body_timeout: float = setting(
        60.0,
        "Seconds a request's whole body may take to arrive; then it is answered 408 and its "
        "connection closed.",
        _seconds,
    )
    max_connections: int = setting(
        1024,
        "Connections each worker process holds open at once; more wait in the listen backlog.",
        _at_least(1),
    )
    workers: int | Literal["auto"] = setting(
        1,
        'Worker processes serving one address ("auto": the CPUs this process may use); '
        "with more than 1, a supervisor process owns config, secrets, signals and the journal.",
        _workers,
    )
    worker_timeout: float = setting(
        30.0, "Seconds a worker may go without a heartbeat before it is replaced.", _seconds
    )
    api_tokens: tuple[str, ...] = setting(
        (),
        "Bearer tokens (literals or secret:// references) POST /api/v1/messages requires in "
        "`Authorization: Bearer ...`; rotated references apply live; empty: the API is open.",
        _tokens,
        secret=True,
    )


@dataclass(frozen=True)
class ManagementSettings:
    """The management listener: /health, /ready, /metrics and /admin on a port of their own."""

    host: str | None = setting(
        None, "Listen address of the management listener (null: server.host); restart to change."
    )
    port: int | None = setting(
        None,
        "Port of the management listener (null: probes and metrics stay on server.port, no "
        "/admin); restart to change.",
        lambda v: None if v is None else _port(v),
    )
    token: str | None = setting(
        None,
        "Bearer token (a literal or secret:// reference, rotated live) that /admin/events and "
        "/admin/config/history require; null: /admin answers 401 to everyone.",
        lambda v: None if v is None or v.strip() else "must not be empty (null: no /admin)",
        secret=True,
    )
    public_ready: bool = setting(
        False,
        "With a management port: also answer /ready on server.port, saying only ready or not "
        "and why in general words (for a load balancer that can only probe the traffic port).",
    )


@dataclass(frozen=True)
class ShutdownSettings:
    """Graceful shutdown budget."""

    drain_delay: float = setting(
        0.0,
        "Seconds to keep serving after SIGTERM (in-app replacement for a preStop sleep).",
        _non_negative,
    )
    timeout: float = setting(
        25.0, "Seconds in-flight requests get to finish after the listener closes.", _non_negative
    )
    hook_timeout: float = setting(
        2.0, "Seconds one cleanup hook may take (unless it sets its own timeout).", _seconds
    )
    hooks_timeout: float = setting(
        3.0, "Seconds for all cleanup hooks together; hooks not reached are skipped.", _seconds
    )
    grace_period: float = setting(
        30.0, "The platform's kill deadline (terminationGracePeriodSeconds).", _seconds
    )


def _max_events(value: Any) -> str | None:
    if not 1 <= value <= 100_000_000:
        return f"must be between 1 and 100000000, got {quote(value)}"
    return None


@dataclass(frozen=True)
class JournalSettings:
    """The event journal (changes need a restart)."""

    path: str | None = setting(
        None,
        "SQLite file that keeps every event across restarts (WAL mode); null keeps this run's "
        "last 10,000 in memory only (`/admin` and `mira events --url` read them there).",
        lambda v: None if v is None or v.strip() else "must not be empty (null: in memory)",
    )
    max_events: int = setting(
        100000, "Events kept in the file; the oldest are dropped first.", _max_events
    )


@dataclass(frozen=True)
class Settings:
    """Mira's whole configuration; `Settings()` is the all-defaults value of `{}`."""

    logging: LoggingSettings = section(LoggingSettings)
    config: ReloadSettings = section(ReloadSettings)
    secrets: SecretsSettings = section(SecretsSettings)
    integrations: IntegrationsSettings = section(IntegrationsSettings)
    server: ServerSettings = section(ServerSettings)
    shutdown: ShutdownSettings = section(ShutdownSettings)
    management: ManagementSettings = section(ManagementSettings)
    journal: JournalSettings = section(JournalSettings)
