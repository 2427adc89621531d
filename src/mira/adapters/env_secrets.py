"""Secrets from environment variables: secret://app-creds:token reads APP_CREDS_TOKEN.

The mapping: path and key are upper-cased, every run of other characters becomes `_`, and the
two are joined with `_` (`secret://github-credentials:token` -> GITHUB_CREDENTIALS_TOKEN,
`secret://team/jira.creds:api-token` -> TEAM_JIRA_CREDS_API_TOKEN). A keyless reference
`secret://db-password` reads DB_PASSWORD, or else every DB_PASSWORD_* variable as its keys.
The guide's plain GITHUB_TOKEN and JIRA_API_TOKEN are not read here: they are configuration
fallbacks for integrations.github.token and integrations.jira.api_token (ENV_FALLBACKS in
mira.domain.config.loading), used when the file leaves those keys unset. Values are read at
start-up and on each refresh (a process's environment does not change from outside).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mira.domain.ports import SecretNotFound, SecretsBackend

_NON_WORD = re.compile(r"[^A-Za-z0-9]+")


def env_name(path: str, key: str | None = None) -> str:
    """The variable a reference maps to: upper case, every run of other characters -> `_`."""
    parts = [path] if key is None else [path, key]
    return "_".join(_NON_WORD.sub("_", p).strip("_").upper() for p in parts)


class EnvSecretsBackend(SecretsBackend):
    """Reads `environ` (a snapshot, or os.environ itself for live values)."""

    name = "env"

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get_secret(self, path: str, key: str | None = None) -> Any:
        if key is not None:
            var = env_name(path, key)
            if var not in self._environ:
                raise SecretNotFound(f"secret {path}:{key}: environment variable {var} is not set")
            return self._environ[var]
        var = env_name(path)
        if var in self._environ:
            return self._environ[var]
        prefix = var + "_"
        found = {
            k[len(prefix) :].lower(): v for k, v in self._environ.items() if k.startswith(prefix)
        }
        if not found:
            raise SecretNotFound(f"secret {path}: neither {var} nor {prefix}* is set")
        return found

    def check(self) -> str:
        return "environment variables"
