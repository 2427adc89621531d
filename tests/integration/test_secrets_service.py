"""Secrets in the real service process: start-up failures, env mapping, custom backends, leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.secrets_service_support import assert_absent
from tests.support import ServiceProcess

pytestmark = pytest.mark.integration

GITHUB_VALUE = "ghp_env-service-value-1"
JIRA_VALUE = "jira-env-service-value-2"
PLAIN_GITHUB = "ghp_plain-github-token-3"
CUSTOM_VALUE = "custom-backend-value-4"
CUSTOM_BACKEND = f'''
from mira.utils.secrets_manager import SecretsBackend, SecretNotFound

class DictBackend(SecretsBackend):
    def get_secret(self, path, key=None):
        if path != "github-credentials":
            raise SecretNotFound(f"secret {{path}} does not exist")
        return {{"token": "{CUSTOM_VALUE}"}} if key is None else "{CUSTOM_VALUE}"
'''


def refs() -> dict[str, Any]:
    return {
        "github": {"token": "secret://github-credentials:token"},
        "jira": {"api_token": "secret://jira-credentials:api_token"},
    }


def scanned(service: ServiceProcess, bodies: list[bytes]) -> dict[str, str]:
    texts = {"stdout": service.log_path.read_text(), "stderr": service.stderr()}
    return texts | {f"body{i}": b.decode() for i, b in enumerate(bodies)}


def test_missing_secret_stops_the_start_naming_the_reference_never_a_value(
    tmp_path: Path,
) -> None:
    service = ServiceProcess(
        tmp_path, {"integrations": refs()}, env={"JIRA_CREDENTIALS_API_TOKEN": JIRA_VALUE}
    )
    try:
        service.start(wait_ready=False)
        code = service.wait_exit(timeout=30)
    finally:
        service.stop()
    stderr = service.stderr()
    assert code == 2
    assert "secret://github-credentials:token" in stderr
    assert "GITHUB_CREDENTIALS_TOKEN is not set" in stderr
    assert "Traceback" not in stderr
    assert_absent([JIRA_VALUE], scanned(service, []))


def test_env_backend_serves_mapped_variables_with_ready_and_metrics(tmp_path: Path) -> None:
    env = {"GITHUB_CREDENTIALS_TOKEN": GITHUB_VALUE, "JIRA_CREDENTIALS_API_TOKEN": JIRA_VALUE}
    service = ServiceProcess(tmp_path, {"integrations": refs()}, env=env)
    bodies: list[bytes] = []
    try:
        service.start()
        status, _, ready = service.get("/ready")
        _, _, metrics = service.get("/metrics")
        bodies += [ready, metrics]
    finally:
        service.stop()
    assert status == 200
    assert b'"github-credentials":{"state":"fresh"' in ready
    assert b'mira_secret_refresh_total{backend="env",result="ok"} 2.0' in metrics
    assert b'mira_secret_age_seconds{name="jira-credentials"}' in metrics
    assert_absent([GITHUB_VALUE, JIRA_VALUE], scanned(service, bodies))


def test_plain_github_token_is_the_fallback_and_config_check_masks_it(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"integrations": {"github": {"enabled": false}}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIRA_", "GITHUB_"))}
    result = subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", "config", "check", str(config)],
        env={**env, "GITHUB_TOKEN": PLAIN_GITHUB},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert '"token": "**********"' in result.stdout
    assert_absent([PLAIN_GITHUB], {"stdout": result.stdout, "stderr": result.stderr})


def test_custom_backend_named_by_dotted_class_path_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "mybackends.py").write_text(CUSTOM_BACKEND)
    config = {
        "secrets": {"backend": "mybackends.DictBackend"},
        "integrations": {"github": {"token": "secret://github-credentials:token"}},
    }
    service = ServiceProcess(tmp_path, config, env={"PYTHONPATH": str(tmp_path)})
    bodies: list[bytes] = []
    try:
        service.start()
        status, _, ready = service.get("/ready")
        _, _, metrics = service.get("/metrics")
        bodies += [ready, metrics]
    finally:
        service.stop()
    assert status == 200
    assert b'"github-credentials":{"state":"fresh"' in ready
    assert b'mira_secret_refresh_total{backend="custom",result="ok"} 1.0' in metrics
    assert_absent([CUSTOM_VALUE], scanned(service, bodies))
