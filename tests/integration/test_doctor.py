"""`mira doctor config.json` as a real subprocess: real OpenBao, the local TLS Kubernetes API
server, and the local GitHub/Jira fakes (no internet here); a table, no secret values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fake_github import FakeGithub
from tests.integration.fake_jira import FakeJira, basic
from tests.integration.integrations_support import CREDENTIAL_ENV, JIRA_USER, vault_token
from tests.integration.k8s_api_server import FakeKubeApiServer, kube_api, write_kubeconfig
from tests.integration.openbao_server import VaultServer, openbao

__all__ = ["kube_api", "openbao"]  # the fixtures are used by name

pytestmark = pytest.mark.integration

GH_TOKEN = "ghp_doctor_token_4242"
JIRA_TOKEN = "jira_doctor_token_4343"
KUBE_GH_TOKEN = "ghp_doctor_from_kubernetes_4444"
ROW = re.compile(r"(?P<name>\S.*?)\s+(?P<status>ok|FAIL)\s+(?P<detail>.*)")


def run_doctor(
    tmp_path: Path, config: dict[str, Any]
) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run the CLI; return (exit code, {check: (status, detail)}, everything it printed)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRA_")}
    for name in CREDENTIAL_ENV:
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", "doctor", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    rows = {}
    for line in proc.stdout.splitlines():
        row = ROW.fullmatch(line)
        assert row, f"not a table row: {line!r}"
        rows[row["name"]] = (row["status"], row["detail"])
    return proc.returncode, rows, proc.stdout + proc.stderr


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub({GH_TOKEN, KUBE_GH_TOKEN}) as server:
        yield server


@pytest.fixture
def jira() -> Iterator[FakeJira]:
    with FakeJira({basic(JIRA_USER, JIRA_TOKEN)}) as server:
        yield server


@pytest.fixture
def vault(openbao: VaultServer) -> VaultServer:
    kv = openbao.client.secrets.kv.v2
    kv.create_or_update_secret("github-credentials", secret={"token": GH_TOKEN})
    kv.create_or_update_secret(
        "jira-credentials", secret={"username": JIRA_USER, "api_token": JIRA_TOKEN}
    )
    return openbao


def vault_config(
    vault: VaultServer, token: str, github: FakeGithub, jira: FakeJira
) -> dict[str, Any]:
    return {
        "secrets": {"backend": "vault", "vault": {"url": vault.url, "token": token, "timeout": 2}},
        "integrations": {
            "github": {
                "enabled": True,
                "base_url": github.base_url,
                "token": "secret://github-credentials:token",
                "timeout": 2,
            },
            "jira": {
                "enabled": True,
                "url": jira.url,
                "username": "secret://jira-credentials:username",
                "api_token": "secret://jira-credentials:api_token",
                "timeout": 2,
                "max_retries": 0,
            },
        },
    }


def test_all_checks_pass_against_openbao_github_and_jira(
    vault: VaultServer, github: FakeGithub, jira: FakeJira, tmp_path: Path
) -> None:
    token = vault_token(vault)
    code, rows, output = run_doctor(tmp_path, vault_config(vault, token, github, jira))
    assert code == 0, output
    assert list(rows) == [
        "config",
        "config mount",
        "secrets:vault",
        "journal",
        "secret references",
        "integration:github",
        "integration:jira",
    ]
    assert all(status == "ok" for status, _ in rows.values()), output
    assert rows["secrets:vault"][1].startswith(f"vault {vault.url}: unsealed")
    assert "token auth" in rows["secrets:vault"][1]
    assert "3 resolved" in rows["secret references"][1]
    assert "authenticated as mira-bot" in rows["integration:github"][1]
    assert f"authenticated as {JIRA_USER}" in rows["integration:jira"][1]
    assert github.calls[-1].headers["Authorization"] == f"Bearer {GH_TOKEN}"
    for secret in (token, GH_TOKEN, JIRA_TOKEN):
        assert secret not in output


def test_rejected_credentials_fail_their_row_and_the_exit_code(
    vault: VaultServer, github: FakeGithub, jira: FakeJira, tmp_path: Path
) -> None:
    token = vault_token(vault)
    github.set_tokens({"ghp_another_token"})
    code, rows, output = run_doctor(tmp_path, vault_config(vault, token, github, jira))
    assert code == 1, output
    assert rows["integration:github"][0] == "FAIL"
    assert "credentials rejected" in rows["integration:github"][1]
    assert rows["integration:jira"][0] == "ok" and rows["secrets:vault"][0] == "ok"
    for secret in (token, GH_TOKEN, JIRA_TOKEN):
        assert secret not in output


def test_an_invalid_vault_token_fails_vault_and_names_the_unresolved_references(
    vault: VaultServer, github: FakeGithub, jira: FakeJira, tmp_path: Path
) -> None:
    bogus = "s.NotARealVaultToken123"
    code, rows, output = run_doctor(tmp_path, vault_config(vault, bogus, github, jira))
    assert code == 1, output
    assert rows["secrets:vault"][0] == "FAIL"
    assert rows["secret references"][0] == "FAIL"
    assert rows["integration:github"] == (
        "FAIL",
        "IntegrationUnavailable: github integration unavailable: integrations.github: "
        "secret://github-credentials:token could not be resolved by the secrets backend",
    )
    assert github.calls == [] and bogus not in output


def test_kubernetes_api_reachable_and_credentials_read_from_its_secrets(
    kube_api: FakeKubeApiServer, github: FakeGithub, tmp_path: Path
) -> None:
    kube_api.put_secret("github-credentials", {"token": KUBE_GH_TOKEN})
    config = {
        "secrets": {
            "backend": "kubernetes",
            "kubernetes": {"kubeconfig": str(write_kubeconfig(tmp_path, kube_api))},
        },
        "integrations": {
            "github": {
                "enabled": True,
                "base_url": github.base_url,
                "token": "secret://github-credentials:token",
            }
        },
    }
    code, rows, output = run_doctor(tmp_path, config)
    assert code == 0, output
    assert rows["secrets:kubernetes"][0] == "ok"
    assert kube_api.url in rows["secrets:kubernetes"][1]
    assert "secrets of namespace 'default' readable" in rows["secrets:kubernetes"][1]
    assert rows["integration:github"][0] == "ok"
    assert github.calls[-1].headers["Authorization"] == f"Bearer {KUBE_GH_TOKEN}"
    assert KUBE_GH_TOKEN not in output and kube_api.token not in output

    kube_api.stop()
    code, rows, output = run_doctor(tmp_path, config)
    assert code == 1, output
    assert rows["secrets:kubernetes"][0] == "FAIL"
    assert KUBE_GH_TOKEN not in output and kube_api.token not in output


def test_an_invalid_config_exits_2_with_the_error(tmp_path: Path) -> None:
    code, rows, output = run_doctor(tmp_path, {"integrations": {"github": {"timeout": -1}}})
    assert code == 2 and rows == {}
    assert "integrations.github.timeout" in output


def test_a_journal_in_a_missing_directory_fails_its_row_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-dir" / "events.db"
    code, rows, output = run_doctor(tmp_path, {"journal": {"path": str(missing)}})
    assert code == 1, output
    status, detail = rows["journal"]
    assert status == "FAIL" and "does not exist" in detail and str(missing.parent) in detail
    assert not missing.parent.exists()


def test_the_doctor_reads_the_journal_and_writes_no_event_into_it(tmp_path: Path) -> None:
    """The doctor puts the secret references in use through the bus, as start-up does, but
    its events stay in memory: the service's journal is only read."""
    from mira.adapters.sqlite_journal import SqliteStore, open_reader

    journal = tmp_path / "events.db"
    SqliteStore.open(str(journal), 100).close()
    code, rows, output = run_doctor(tmp_path, {"journal": {"path": str(journal)}})
    assert code == 0, output
    assert rows["journal"] == ("ok", f"{journal}: events up to position 0")
    conn = open_reader(str(journal))
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        conn.close()
    # not there yet: fine, and the doctor does not create it (it may run as another user)
    fresh = tmp_path / "fresh.db"
    code, rows, output = run_doctor(tmp_path, {"journal": {"path": str(fresh)}})
    assert code == 0 and rows["journal"] == ("ok", f"{fresh}: not there yet, start-up creates it")
    assert not fresh.exists()


def test_a_corrupt_journal_fails_its_row_and_is_left_where_it_is(tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    journal.write_bytes(b"not sqlite " * 500)
    code, rows, output = run_doctor(tmp_path, {"journal": {"path": str(journal)}})
    assert code == 1, output
    status, detail = rows["journal"]
    assert status == "FAIL" and "moves it aside" in detail, detail
    assert journal.read_bytes() == b"not sqlite " * 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "events.db"]
