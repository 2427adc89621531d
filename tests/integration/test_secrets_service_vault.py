"""Secrets through the running service with a real OpenBao: reads, rotation, TTL, outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mira.domain import events as ev
from mira.utils.secrets_manager import get_secrets_manager
from tests.integration.openbao_server import (
    OpenBaoProcess,
    VaultServer,
    bao_process,
    enable_approle,
    mount_kv_v1,
    openbao,
)
from tests.integration.secrets_service_support import embedded
from tests.support import wait_until

__all__ = ["openbao"]  # the fixture is used by name

pytestmark = pytest.mark.integration

TOKEN_V1 = "ghp_vault-service-token-v1"
TOKEN_V2 = "ghp_vault-service-token-v2"
JIRA_TOKEN = "jira-vault-service-token"
KV1_TOKEN = "ghp_kv1-service-token"
VALUES = [TOKEN_V1, TOKEN_V2, JIRA_TOKEN, KV1_TOKEN]
POLICY = 'path "secret/data/*" { capabilities = ["read"] }'


def seed(server: VaultServer) -> None:
    kv2 = server.client.secrets.kv.v2
    kv2.create_or_update_secret("github-credentials", secret={"token": TOKEN_V1})
    kv2.create_or_update_secret(
        "jira-credentials", secret={"username": "user@example.com", "api_token": JIRA_TOKEN}
    )


def vault_config(server: VaultServer, **secrets: Any) -> dict[str, Any]:
    vault = {"url": server.url, "token": server.root_token, "timeout": 1.0}
    vault.update(secrets.pop("vault", {}))
    return {
        "secrets": {"backend": "vault", "vault": vault, **secrets},
        "integrations": {
            "github": {"token": "secret://github-credentials:token"},
            "jira": {
                "username": "secret://jira-credentials:username",
                "api_token": "secret://jira-credentials:api_token",
            },
        },
    }


class Received:
    """A refresh callback recording what it was given, thread-safely."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, new_value: Any) -> None:
        with self._lock:
            self.values.append(new_value)

    def revealed(self) -> list[str]:
        with self._lock:
            return [v["token"].reveal() for v in self.values]


@pytest.fixture
def vault(openbao: VaultServer) -> Iterator[VaultServer]:
    seed(openbao)
    yield openbao
    seed(openbao)  # leave TOKEN_V1 for the next test


def test_kv2_references_are_resolved_before_the_config_is_applied(
    vault: VaultServer, tmp_path: Path
) -> None:
    with embedded(tmp_path, vault_config(vault)) as service:
        manager = get_secrets_manager()
        assert manager.get("secret://github-credentials:token").reveal() == TOKEN_V1  # type: ignore[union-attr]
        assert manager.get("secret://jira-credentials:api_token").reveal() == JIRA_TOKEN  # type: ignore[union-attr]
        journal = [type(e).__name__ for e in service.container.journal().read()]
        assert journal[:3] == ["SecretLoaded", "SecretLoaded", "ConfigLoaded"]
        loaded = service.events(ev.SecretLoaded)
        assert {e.secret for e in loaded} == {"github-credentials", "jira-credentials"}
        status, body = service.ready()
        assert status == 200
        assert body["secrets"]["github-credentials"]["state"] == "fresh"
        assert body["secrets"]["github-credentials"]["version"].isdigit()
        assert service.metric("mira_secret_refresh_total", backend="vault", result="ok") == 3
        service.assert_no_leak(VALUES)


def test_kv1_mount_is_read_through_the_service(vault: VaultServer, tmp_path: Path) -> None:
    mount_kv_v1(vault, "kv1")
    vault.client.secrets.kv.v1.create_or_update_secret(
        "github-credentials", secret={"token": KV1_TOKEN}, mount_point="kv1"
    )
    config = vault_config(vault, vault={"mount_point": "kv1", "kv_version": 1})
    config["integrations"].pop("jira")
    with embedded(tmp_path, config) as service:
        assert get_secrets_manager().get("secret://github-credentials:token").reveal() == KV1_TOKEN  # type: ignore[union-attr]
        assert service.secret_state("github-credentials")["state"] == "fresh"
        service.assert_no_leak(VALUES)


def test_rotation_is_picked_up_by_auto_refresh_and_reaches_the_callback(
    vault: VaultServer, tmp_path: Path
) -> None:
    config = vault_config(vault, auto_refresh=True, refresh_interval=0.3, stale_after=30)
    with embedded(tmp_path, config) as service:
        received = Received()
        redelivered: list[Any] = []
        get_secrets_manager().register_refresh_callback("github-credentials", received)
        service.container.subscriptions().subscribe(
            "integrations.github.token",
            lambda ref: redelivered.append(get_secrets_manager().get(ref).reveal()),  # type: ignore[union-attr]
        )
        written = vault.client.secrets.kv.v2.create_or_update_secret(
            "github-credentials", secret={"token": TOKEN_V2}
        )
        version = str(written["data"]["version"])
        wait_until(lambda: received.values, timeout=10, message="the refresh callback")
        assert received.revealed() == [TOKEN_V2]
        assert TOKEN_V2 not in repr(received.values) + str(received.values)
        assert redelivered == [TOKEN_V2]
        rotated = service.events(ev.SecretRotated)
        assert [(e.secret, e.version) for e in rotated] == [("github-credentials", version)]
        assert service.secret_state("github-credentials")["version"] == version
        service.assert_no_leak(VALUES)


def approle_ids(server: VaultServer, **role_options: Any) -> tuple[str, str]:
    enable_approle(server)
    server.client.sys.create_or_update_acl_policy("mira-service-read", POLICY)
    server.client.auth.approle.create_or_update_approle(
        "mira-service", token_policies=["mira-service-read"], **role_options
    )
    role_id = server.client.auth.approle.read_role_id("mira-service")["data"]["role_id"]
    secret_id = server.client.auth.approle.generate_secret_id("mira-service")["data"]["secret_id"]
    return role_id, secret_id


def test_approle_token_with_a_one_second_ttl_is_kept_alive_for_ten_ttls(
    vault: VaultServer, tmp_path: Path
) -> None:
    role_id, secret_id = approle_ids(vault, token_ttl="1s", token_max_ttl="120s")
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    auth = {"method": "approle", "role_id": role_id, "secret_id_file": str(secret_file)}
    config = vault_config(
        vault, auto_refresh=True, refresh_interval=0.2, stale_after=30, vault={"auth": auth}
    )
    config["secrets"]["vault"]["token"] = None
    with embedded(tmp_path, config) as service:
        deadline = time.monotonic() + 10.5
        ttls: list[float] = []
        for _ in range(200):  # bounded in count and time
            if time.monotonic() >= deadline:
                break
            ttl = service.metric("mira_vault_token_ttl_seconds")
            assert ttl is not None
            ttls.append(ttl)
            value = get_secrets_manager().get("secret://github-credentials:token")
            assert value is not None and value.reveal() == TOKEN_V1
            time.sleep(0.1)
        assert service.events(ev.SecretRefreshFailed) == []
        assert service.metric("mira_secret_refresh_total", backend="vault", result="error") is None
        ok = service.metric("mira_secret_refresh_total", backend="vault", result="ok")
        assert ok is not None and ok >= 3 + 2 * 30  # about 50 refresh rounds of 2 secrets
        assert ttls and all(0 < t <= 1 for t in ttls)
        assert "Forbidden" not in service.log_text()
        assert service.ready()[0] == 200
        service.assert_no_leak([*VALUES, secret_id])


@pytest.fixture
def own_vault() -> Iterator[OpenBaoProcess]:
    """A server of this test's own: it is stopped and started again."""
    with bao_process() as server:
        seed(server)
        yield server


def test_outage_serves_cached_values_reports_stale_then_recovers_within_an_interval(
    own_vault: OpenBaoProcess, tmp_path: Path
) -> None:
    interval = 1.0
    config = vault_config(
        own_vault, auto_refresh=True, refresh_interval=interval, max_backoff=0.5, stale_after=30
    )
    config["secrets"]["stale_makes_unready"] = True
    with embedded(tmp_path, config) as service:
        own_vault.stop()
        wait_until(
            lambda: service.events(ev.SecretRefreshFailed), timeout=5, message="a failed refresh"
        )
        value = get_secrets_manager().get("secret://github-credentials:token")
        assert value is not None and value.reveal() == TOKEN_V1
        status, body = service.ready()
        state = body["secrets"]["github-credentials"]
        assert status == 503 and state["state"] == "stale" and state["age_seconds"] >= 0
        assert "github-credentials" in " ".join(body["reasons"])
        assert service.metric("mira_secret_refresh_total", backend="vault", result="error")

        own_vault.start()
        seed(own_vault)
        # The back-off is capped at the interval (tests/unit/test_secrets_manager.py), so it
        # recovers within one interval; the wall clock is not asserted on a shared machine.
        wait_until(lambda: service.ready()[0] == 200, timeout=interval * 1.1 + 10, message="ready")
        assert service.secret_state("github-credentials")["state"] == "fresh"
        assert service.events(ev.SecretRotated) == []
        service.assert_no_leak(VALUES)
