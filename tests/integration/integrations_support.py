"""Helpers for the integrations end-to-end tests: the real service (a subprocess) talking to the
local GitHub/Jira fakes (no internet here), every HTTP answer kept for the credential-leak check."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.openbao_server import VaultServer
from tests.support import ServiceProcess, wait_until

JIRA_USER = "bot@example.com"
CREDENTIAL_ENV = ("GITHUB_TOKEN", "JIRA_API_TOKEN", "VAULT_TOKEN", "VAULT_ADDR")


def plan_input(name: str, goals: list[str]) -> dict[str, Any]:
    """A generate_plan input: publish_plan generates the plan inside the service."""
    return {"name": name, "goals": goals, "duration_weeks": 8, "start_date": "2026-01-05"}


def publish(target: str, where: str, plan: dict[str, Any]) -> dict[str, Any]:
    place = "repository" if target == "github" else "project"
    return {"type": "publish_plan", "data": {"target": target, place: where, "plan": plan}}


class Service:
    """A running service plus a record of every HTTP answer it gave to the test."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.answers: list[bytes] = []
        self._lock = threading.Lock()

    def _keep(self, answer: tuple[int, dict[str, str], bytes]) -> tuple[int, Any]:
        status, headers, body = answer
        with self._lock:
            self.answers.append(json.dumps(headers).encode() + body)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def post(self, message: dict[str, Any], timeout: float = 30.0) -> tuple[int, Any]:
        return self._keep(self.process.post("/api/v1/messages", message, timeout=timeout))

    def ready(self) -> dict[str, Any]:
        status, body = self._keep(self.process.get("/ready"))
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    def metrics(self) -> str:
        status, body = self._keep(self.process.get("/metrics"))
        assert status == 200
        return str(body)

    def logged(self, message: str) -> list[dict[str, Any]]:
        return self.process.find(message)

    def wait_logged(self, message: str, count: int = 1, timeout: float = 10.0) -> None:
        wait_until(
            lambda: len(self.logged(message)) >= count, timeout=timeout, message=repr(message)
        )

    def assert_no_leak(self, secrets: Iterable[str]) -> None:
        """No secret value in any log line (stdout, stderr) or any answer the test received."""
        self.ready()
        self.metrics()
        texts = {
            "stdout": self.process.log_path.read_bytes(),
            "stderr": self.process.err_path.read_bytes(),
            "answers": b"\n".join(self.answers),
        }
        for secret in secrets:
            for where, text in texts.items():
                assert secret.encode() not in text, f"a credential leaked into {where}"


@contextmanager
def running(
    workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[Service]:
    """The real service as a subprocess (JSON logs on stdout), always killed by PID at the end."""
    config.setdefault("logging", {"level": "INFO", "json_format": True})
    process = ServiceProcess(workdir, config, env)
    for name in CREDENTIAL_ENV:  # only what the test gives, never the developer's own tokens
        if name not in (env or {}):
            process.env.pop(name, None)
    try:
        process.start()
        yield Service(process)
    finally:
        process.stop()


def vault_token(server: VaultServer) -> str:
    """A fresh, distinctive Vault token allowed to read KV v2 (the leak checks look for it)."""
    policy = 'path "secret/data/*" { capabilities = ["read"] }'
    server.client.sys.create_or_update_policy("mira-integrations-e2e", policy)
    made = server.client.auth.token.create(policies=["mira-integrations-e2e"], ttl="1h")
    return str(made["auth"]["client_token"])
