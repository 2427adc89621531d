"""DEPLOYMENT.md names exactly the config keys and environment variables the code has."""

from __future__ import annotations

import re

import pytest

from mira.domain.config.loading import ENV_FALLBACKS, ENV_OVERRIDES
from mira.domain.config.model import Settings
from mira.domain.config.schema import iter_keys, to_dict
from mira.entrypoints.cli import config_reference
from mira.entrypoints.events_remote import TOKEN_ENV
from tests.support import ROOT

DOC = (ROOT / "DEPLOYMENT.md").read_text()
ENV_PATTERN = re.compile(
    r"\b(MIRA_[A-Z0-9_]+|VAULT_[A-Z0-9_]+|GITHUB_TOKEN|JIRA_API_TOKEN|WEB_CONCURRENCY)\b"
)


def code_env_vars() -> set[str]:
    """Every variable Mira itself reads (backend-specific reference mappings aside)."""
    names = set(ENV_OVERRIDES) | set(ENV_FALLBACKS)
    names |= {str(k.default) for k in iter_keys(Settings) if k.path.endswith("_env")}
    names.add(TOKEN_ENV)  # read by the CLI's --url, not by the service
    return names


def reference_section() -> str:
    match = re.search(r"^## Configuration reference\n(.*?)(?=^## )", DOC, re.MULTILINE | re.DOTALL)
    assert match, "DEPLOYMENT.md has no '## Configuration reference' section"
    return match.group(1)


def test_every_config_key_is_documented_and_every_documented_key_exists() -> None:
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", reference_section(), re.MULTILINE))
    in_code = {k.path for k in iter_keys(Settings)}
    assert documented - in_code == set(), "documented keys that do not exist"
    assert in_code - documented == set(), "keys missing from DEPLOYMENT.md"


def test_documented_defaults_match_the_code() -> None:
    rows = re.findall(
        r"^\| `([a-z_.]+)` \| [^|]+ \| `([^`]*)` \|", reference_section(), re.MULTILINE
    )
    defaults = {k.path: to_dict(k.default) for k in iter_keys(Settings)}  # a tuple as a list
    import json

    wrong = {path: value for path, value in rows if json.loads(value) != defaults[path]}
    assert wrong == {}


def test_every_environment_variable_is_documented_and_exists() -> None:
    documented = set(ENV_PATTERN.findall(DOC))
    assert documented - code_env_vars() == set(), "documented variables the code never reads"
    assert code_env_vars() - documented == set(), "variables missing from DEPLOYMENT.md"


def test_each_key_s_row_is_what_mira_config_reference_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table is generated: a setting's meaning changed in the code shows up here."""
    config_reference()
    rows = capsys.readouterr().out.splitlines()[2:]
    section = reference_section().splitlines()
    assert [row for row in rows if row not in section] == []
