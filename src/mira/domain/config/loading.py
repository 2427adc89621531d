"""Pure loading of settings: JSON text + environment dict -> Settings or a list of errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mira.domain.config.json_text import parse_json
from mira.domain.config.model import LEVELS, Settings
from mira.domain.config.schema import flatten, parse_dataclass, quote, to_dict
from mira.domain.config.secret_refs import invalid_refs

#: Errors listed per rejected config; the rest are counted.
MAX_ERRORS = 20
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def _bool(name: str, raw: str) -> tuple[Any, str | None]:
    value = raw.strip().lower()
    if value in TRUE:
        return True, None
    if value in FALSE:
        return False, None
    return None, f"{name}: expected true or false, got {quote(raw)}"


def _level(name: str, raw: str) -> tuple[Any, str | None]:
    value = raw.strip().upper()
    if value in LEVELS:
        return value, None
    return None, f"{name}: must be one of {', '.join(LEVELS)}, got {quote(raw)}"


def _text(name: str, raw: str) -> tuple[Any, str | None]:
    return (raw, None) if raw.strip() else (None, f"{name}: must not be empty")


def _workers(name: str, raw: str) -> tuple[Any, str | None]:
    value = raw.strip().lower()
    if value == "auto":
        return "auto", None
    if value.isdigit() and len(value) <= 4:
        return int(value), None
    return None, f"{name}: expected a number of workers or auto, got {quote(raw)}"


EnvParser = Callable[[str, str], tuple[Any, str | None]]

#: Environment variables that override the file (env > file > default).
ENV_OVERRIDES: dict[str, tuple[str, EnvParser]] = {
    "MIRA_LOG_LEVEL": ("logging.level", _level),
    "MIRA_LOG_JSON": ("logging.json_format", _bool),
    "MIRA_CONFIG_HOT_RELOAD": ("config.hot_reload", _bool),
    "MIRA_SECRETS_BACKEND": ("secrets.backend", _text),
    "MIRA_SECRETS_AUTO_REFRESH": ("secrets.auto_refresh", _bool),
    "MIRA_VAULT_URL": ("secrets.vault.url", _text),
    "MIRA_VAULT_TOKEN": ("secrets.vault.token", _text),
    "MIRA_GITHUB_ENABLED": ("integrations.github.enabled", _bool),
    "MIRA_SERVER_WORKERS": ("server.workers", _workers),
    "MIRA_JOURNAL_PATH": ("journal.path", _text),
}

#: Conventional variables used only where the file leaves the key unset (file > these > default).
ENV_FALLBACKS: dict[str, tuple[str, EnvParser]] = {
    "VAULT_ADDR": ("secrets.vault.url", _text),
    "VAULT_TOKEN": ("secrets.vault.token", _text),
    "GITHUB_TOKEN": ("integrations.github.token", _text),
    "JIRA_API_TOKEN": ("integrations.jira.api_token", _text),
    "WEB_CONCURRENCY": ("server.workers", _workers),
}

#: Keys whose change needs a process restart: a reload reports them and applies nothing.
RESTART_REQUIRED_PREFIXES = (
    "server.",
    "secrets.backend",
    "secrets.vault.",
    "secrets.kubernetes.",
    "secrets.file.",
    "journal.",
    "management.host",
    "management.port",
)
#: Keys under a restart prefix that still apply live (tokens rotate without a restart).
LIVE_KEYS = ("server.api_tokens",)


@dataclass(frozen=True)
class LoadResult:
    settings: Settings | None
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.settings is not None


def _set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _has_path(tree: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return False
        tree = tree[part]
    return tree is not None


def apply_environment(raw: Any, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """Layer the environment onto the file's raw data: a pure function of the env dict."""
    if not isinstance(raw, dict):
        return raw, []
    merged: dict[str, Any] = json.loads(json.dumps(raw))
    errors: list[str] = []
    layers = ((ENV_FALLBACKS, False), (ENV_OVERRIDES, True))
    for table, override in layers:
        for name, (path, parse) in table.items():
            if name not in environ or (not override and _has_path(raw, path)):
                continue
            value, problem = parse(name, environ[name])
            if problem:
                errors.append(problem)
            else:
                _set_path(merged, path, value)
    return merged, errors


def load_settings(text: str, source: str, environ: Mapping[str, str]) -> LoadResult:
    """Parse and validate a config file's text with the environment on top."""
    raw, problem = parse_json(text, source)
    if problem:
        return LoadResult(None, (problem,))
    if not isinstance(raw, dict):
        return LoadResult(None, (f"{source}: the top level must be a JSON object",))
    merged, env_errors = apply_environment(raw, environ)
    errors: list[str] = []
    settings = parse_dataclass(Settings, merged, "", errors)
    if not errors and not env_errors:
        errors = invalid_refs(settings) + cross_checks(settings)
    problems = [f"environment: {e}" for e in env_errors] + [f"{source}: {e}" for e in errors]
    if len(problems) > MAX_ERRORS:  # a file of 100k unknown keys must not give a 100k-line error
        extra = len(problems) - MAX_ERRORS
        problems = [*problems[:MAX_ERRORS], f"{source}: and {extra} more problems"]
    if problems:
        return LoadResult(None, tuple(problems))
    return LoadResult(settings, ())


def cross_checks(settings: Settings) -> list[str]:
    """Rules that span keys."""
    return _shutdown_budget(settings) + _management_address(settings) + _thread_pool(settings)


def _thread_pool(settings: Settings) -> list[str]:
    s = settings.server
    if s.max_threads is not None and s.max_threads < s.threads:
        return [
            f"server.max_threads ({s.max_threads}) must be at least server.threads "
            f"({s.threads}): the app's threads are among them"
        ]
    return []


def _management_address(settings: Settings) -> list[str]:
    m, server = settings.management, settings.server
    if m.port is None:
        if m.host is not None:
            return ["management.host is set but management.port is null; set both or neither"]
        return []
    if m.port == server.port and m.port != 0 and (m.host or server.host) == server.host:
        return [f"management.port ({m.port}) must differ from server.port on the same host"]
    return []


def _shutdown_budget(settings: Settings) -> list[str]:
    s = settings.shutdown
    budget = s.drain_delay + s.timeout + s.hooks_timeout
    if budget > s.grace_period:
        return [
            f"shutdown: drain_delay ({s.drain_delay:g}) + timeout ({s.timeout:g}) + hooks_timeout "
            f"({s.hooks_timeout:g}) = {budget:g}s does not fit in grace_period "
            f"({s.grace_period:g}s); lower them or raise grace_period together with "
            "terminationGracePeriodSeconds"
        ]
    return []


def changed_keys(old: Settings, new: Settings) -> tuple[str, ...]:
    """Leaf key paths whose values differ, sorted."""
    before, after = flatten(to_dict(old)), flatten(to_dict(new))
    return tuple(sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)))


def restart_required(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k for k in keys if k.startswith(RESTART_REQUIRED_PREFIXES) and k not in LIVE_KEYS)
