"""The Vault secrets backend against a real OpenBao (or Vault) server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.adapters.vault_secrets import VaultSecretsBackend
from mira.domain.config.model import VaultAuthSettings, VaultSettings
from mira.domain.ports import SecretNotFound, SecretsBackendUnavailable
from tests.integration.openbao_server import (
    OpenBaoProcess,
    TokenReviewServer,
    VaultServer,
    enable_approle,
    enable_kubernetes_auth,
    mount_kv_v1,
    openbao,
    openbao_process,
    openbao_tls,
    token_review,
    wait_until,
)

__all__ = [
    "openbao",
    "openbao_process",
    "openbao_tls",
    "token_review",
]  # fixtures, imported explicitly

pytestmark = pytest.mark.integration

GITHUB_TOKEN = "ghp_sekrit-value-0001"
JIRA_TOKEN = "jira-sekrit-value-0002"
ROTATED_TOKEN = "ghp_sekrit-value-0003"
SECRET_VALUES = (GITHUB_TOKEN, JIRA_TOKEN, ROTATED_TOKEN)
POLICY = (
    'path "secret/data/*" { capabilities = ["read"] }\npath "kv1/*" { capabilities = ["read"] }'
)

Factory = Callable[..., VaultSecretsBackend]


def seed(server: VaultServer) -> None:
    """Put the test secrets (again: the dev server forgets everything on restart)."""
    kv2 = server.client.secrets.kv.v2
    kv2.create_or_update_secret("github-credentials", secret={"token": GITHUB_TOKEN})
    kv2.create_or_update_secret(
        "jira-credentials", secret={"username": "user@example.com", "api_token": JIRA_TOKEN}
    )
    mount_kv_v1(server, "kv1")
    server.client.secrets.kv.v1.create_or_update_secret(
        "github-credentials", secret={"token": GITHUB_TOKEN}, mount_point="kv1"
    )


def approle(server: VaultServer, **role_options: Any) -> tuple[str, str]:
    """Create the `mira` AppRole (read-only policy); return (role_id, a fresh secret_id)."""
    enable_approle(server)
    server.client.sys.create_or_update_acl_policy("mira-read", POLICY)
    server.client.auth.approle.create_or_update_approle(
        "mira", token_policies=["mira-read"], **role_options
    )
    role_id = server.client.auth.approle.read_role_id("mira")["data"]["role_id"]
    secret_id = server.client.auth.approle.generate_secret_id("mira")["data"]["secret_id"]
    return role_id, secret_id


def assert_no_secret_values(text: str) -> None:
    for value in SECRET_VALUES:
        assert value not in text


def read_for(backend: VaultSecretsBackend, seconds: float, max_reads: int = 3000) -> list[str]:
    """Read a secret in a loop bounded by time and count; return the errors seen."""
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    for _ in range(max_reads):
        if time.monotonic() >= deadline:
            break
        try:
            assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
        except SecretsBackendUnavailable as exc:
            errors.append(str(exc))
        time.sleep(0.01)
    return errors


def reads_ok(backend: VaultSecretsBackend) -> bool:
    try:
        return backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    except SecretsBackendUnavailable:
        return False


@pytest.fixture
def vault(openbao: VaultServer) -> VaultServer:
    seed(openbao)
    return openbao


@pytest.fixture
def make_backend(vault: VaultServer) -> Iterator[Factory]:
    made: list[VaultSecretsBackend] = []

    def make(environ: dict[str, str] | None = None, **options: Any) -> VaultSecretsBackend:
        options.setdefault("token", vault.root_token)
        options.setdefault("timeout", 2.0)
        backend = VaultSecretsBackend(VaultSettings(url=vault.url, **options), environ or {})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def test_reads_whole_kv2_secret_and_one_key(make_backend: Factory) -> None:
    backend = make_backend()
    assert backend.get_secret("jira-credentials") == {
        "username": "user@example.com",
        "api_token": JIRA_TOKEN,
    }
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN


def test_reads_whole_kv1_secret_and_one_key(make_backend: Factory) -> None:
    backend = make_backend(mount_point="kv1", kv_version=1)
    assert backend.get_secret("github-credentials") == {"token": GITHUB_TOKEN}
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    assert backend.get_secret_version("github-credentials") is None


def test_reports_new_kv2_version_after_rotation(vault: VaultServer, make_backend: Factory) -> None:
    backend = make_backend()
    before = backend.get_secret_version("github-credentials")
    vault.client.secrets.kv.v2.create_or_update_secret(
        "github-credentials", secret={"token": ROTATED_TOKEN}
    )
    assert backend.get_secret("github-credentials", "token") == ROTATED_TOKEN
    assert before is not None
    assert backend.get_secret_version("github-credentials") == str(int(before) + 1)


def test_missing_path_or_key_raises_not_found_naming_it(
    vault: VaultServer, make_backend: Factory
) -> None:
    for backend in (make_backend(), make_backend(mount_point="kv1", kv_version=1)):
        with pytest.raises(SecretNotFound, match="no-such-secret") as missing_path:
            backend.get_secret("no-such-secret", "token")
        with pytest.raises(SecretNotFound, match=r"github-credentials.*'password'") as missing_key:
            backend.get_secret("github-credentials", "password")
        assert_no_secret_values(f"{missing_path.value!r} {missing_key.value!r}")
    vault.client.secrets.kv.v2.delete_latest_version_of_secret("jira-credentials")
    with pytest.raises(SecretNotFound, match="jira-credentials"):
        make_backend().get_secret("jira-credentials")


def test_kv_version_that_does_not_match_the_mount_is_named_not_reported_as_missing(
    make_backend: Factory,
) -> None:
    v1_on_v2 = make_backend(kv_version=1)  # `secret/` is a KV v2 mount
    with pytest.raises(SecretNotFound) as failure:
        v1_on_v2.get_secret("github-credentials", "token")
    assert str(failure.value) == (
        "Vault secret 'github-credentials': mount 'secret' is a KV version 2 engine, but "
        "secrets.vault.kv_version is 1; set secrets.vault.kv_version to 2"
    )
    v2_on_v1 = make_backend(mount_point="kv1", kv_version=2)
    with pytest.raises(SecretNotFound, match="mount 'kv1' is a KV version 1 engine, but"):
        v2_on_v1.get_secret("github-credentials")
    with pytest.raises(SecretNotFound, match="version 1 engine"):
        v2_on_v1.get_secret_version("github-credentials")
    # With the version right, a missing secret is still just missing.
    with pytest.raises(SecretNotFound) as missing:
        make_backend(kv_version=2).get_secret("no-such-secret")
    assert "kv_version" not in str(missing.value)


def test_non_expiring_root_token_reports_an_infinite_ttl(make_backend: Factory) -> None:
    backend = make_backend()  # the dev server's root token has no TTL
    assert backend.token_ttl_seconds() is None  # unknown before the first login
    backend.start()
    assert backend.token_ttl_seconds() == float("inf")


def test_approle_login_with_secret_id_from_env(vault: VaultServer, make_backend: Factory) -> None:
    role_id, secret_id = approle(vault)
    auth = VaultAuthSettings(method="approle", role_id=role_id, secret_id_env="MIRA_TEST_SID")
    backend = make_backend(token=None, auth=auth, environ={"MIRA_TEST_SID": secret_id})
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    assert "approle auth" in backend.check()


def test_approle_without_any_secret_id_names_where_to_put_it(
    vault: VaultServer, make_backend: Factory
) -> None:
    role_id, _ = approle(vault)
    backend = make_backend(token=None, auth=VaultAuthSettings(method="approle", role_id=role_id))
    with pytest.raises(SecretsBackendUnavailable, match="secret_id_file or the VAULT_SECRET_ID"):
        backend.get_secret("github-credentials")


def test_forbidden_read_logs_in_again_rereading_secret_id_file(
    vault: VaultServer, make_backend: Factory, tmp_path: Path
) -> None:
    role_id, secret_id = approle(vault)
    sid_file = tmp_path / "secret-id"
    sid_file.write_text(secret_id + "\n")
    auth = VaultAuthSettings(method="approle", role_id=role_id, secret_id_file=str(sid_file))
    backend = make_backend(token=None, auth=auth)
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    # Rotate the secret_id and revoke every AppRole token: the next read meets a 403.
    new_sid = vault.client.auth.approle.generate_secret_id("mira")["data"]["secret_id"]
    sid_file.write_text(new_sid)
    vault.client.auth.approle.destroy_secret_id("mira", secret_id)
    vault.client.sys.revoke_prefix("auth/approle/login")
    with capture_logs() as logs:
        assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    assert [e["reason"] for e in logs if e["event"] == "vault_login"] == ["forbidden"]


def test_short_ttl_token_is_renewed_for_ten_ttls_without_errors(
    vault: VaultServer, make_backend: Factory
) -> None:
    role_id, secret_id = approle(vault, token_ttl="2s", token_max_ttl="120s")
    auth = VaultAuthSettings(method="approle", role_id=role_id, secret_id=secret_id)
    backend = make_backend(token=None, auth=auth)
    with capture_logs() as logs:
        backend.start()
        errors = read_for(backend, seconds=21.0)
        ttl = backend.token_ttl_seconds()
    assert errors == []
    assert ttl is not None and 0 < ttl <= 2
    assert sum(e["event"] == "vault_token_renewed" for e in logs) >= 10
    assert [e["reason"] for e in logs if e["event"] == "vault_login"] == ["startup"]


def test_token_at_max_ttl_is_replaced_by_a_new_approle_login(
    vault: VaultServer, make_backend: Factory
) -> None:
    role_id, secret_id = approle(vault, token_ttl="2s", token_max_ttl="4s")
    auth = VaultAuthSettings(method="approle", role_id=role_id, secret_id=secret_id)
    backend = make_backend(token=None, auth=auth)
    with capture_logs() as logs:
        backend.start()
        errors = read_for(backend, seconds=9.0)
    assert errors == []
    relogins = [e for e in logs if e["event"] == "vault_login" and e["reason"] != "startup"]
    assert len(relogins) >= 2
    assert {e["reason"] for e in relogins} <= {"max_ttl", "renewal_refused", "not_renewable"}


def test_token_auth_past_max_ttl_logs_error_then_reports_unavailable(
    vault: VaultServer, make_backend: Factory
) -> None:
    vault.client.sys.create_or_update_acl_policy("mira-read", POLICY)
    token = vault.client.auth.token.create(
        policies=["mira-read"], ttl="2s", explicit_max_ttl="3s", renewable=True
    )["auth"]["client_token"]
    backend = make_backend(token=token)
    with capture_logs() as logs:
        backend.start()
        assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
        assert wait_until(lambda: bool(read_for(backend, seconds=0.1)), timeout=8.0)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors and errors[0]["event"] in (
        "vault_token_near_max_ttl",
        "vault_token_renewal_refused",
    )
    with pytest.raises(SecretsBackendUnavailable, match="permission denied") as failure:
        backend.get_secret("github-credentials", "token")
    assert token not in str(failure.value)
    assert all(token not in repr(e) for e in logs)


def test_wrong_token_gives_clear_error(make_backend: Factory) -> None:
    backend = make_backend(token="s.not-a-real-token")
    with pytest.raises(SecretsBackendUnavailable, match="token login failed: permission denied"):
        backend.check()
    with pytest.raises(SecretsBackendUnavailable, match="permission denied") as failure:
        backend.get_secret("github-credentials", "token")
    assert "s.not-a-real-token" not in str(failure.value)


def test_stopped_server_is_unavailable_promptly_then_recovers(
    vault: VaultServer, make_backend: Factory
) -> None:
    backend = make_backend(timeout=2.0)
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    vault.stop()
    try:
        started = time.monotonic()
        with pytest.raises(SecretsBackendUnavailable, match="connection failed") as failure:
            backend.get_secret("github-credentials", "token")
        assert time.monotonic() - started < 10.0  # fails, rather than retrying for long
        with pytest.raises(SecretsBackendUnavailable):
            backend.check()
        assert_no_secret_values(str(failure.value))
    finally:
        vault.start()
    seed(vault)
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    assert "unsealed" in backend.check()


def test_sealed_server_is_reported_as_sealed(vault: VaultServer, make_backend: Factory) -> None:
    backend = make_backend()
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    vault.client.sys.seal()
    try:
        with pytest.raises(SecretsBackendUnavailable, match="sealed"):
            backend.check()
        with pytest.raises(SecretsBackendUnavailable):
            backend.get_secret("github-credentials", "token")
    finally:
        vault.stop()
        vault.start()


def test_no_secret_value_or_token_in_logs(vault: VaultServer, make_backend: Factory) -> None:
    role_id, secret_id = approle(vault, token_ttl="2s", token_max_ttl="3s")
    auth = VaultAuthSettings(method="approle", role_id=role_id, secret_id=secret_id)
    backend = make_backend(token=None, auth=auth)
    with capture_logs() as logs:
        backend.start()
        read_for(backend, seconds=4.0)
        with pytest.raises(SecretNotFound):
            backend.get_secret("github-credentials", "nope")
    assert any(e["event"] == "vault_login" for e in logs)
    text = repr(logs)
    assert_no_secret_values(text)
    assert secret_id not in text


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"token": None}, "token .* is required for token auth"),
        ({"auth": VaultAuthSettings(method="approle")}, "role_id is required"),
        ({"auth": VaultAuthSettings(method="kubernetes")}, "auth.role is required"),
        ({"url": "vault.example.com:8200"}, "must start with http"),
    ],
)
def test_incomplete_settings_are_rejected_naming_the_key(
    options: dict[str, Any], problem: str
) -> None:
    settings = VaultSettings(**{"token": "s.x", **options})
    with pytest.raises(ValueError, match=problem):
        VaultSecretsBackend(settings, {})


def test_a_huge_url_is_quoted_by_a_short_prefix() -> None:
    with pytest.raises(ValueError) as failure:
        VaultSecretsBackend(VaultSettings(url="v" * 1_000_000, token="s.x"), {})
    assert len(str(failure.value)) < 200 and "1000000 characters" in str(failure.value)


@pytest.fixture
def kube_backend(
    openbao_process: VaultServer, token_review: TokenReviewServer, tmp_path: Path
) -> Iterator[tuple[VaultSecretsBackend, Path]]:
    server = openbao_process
    seed(server)
    server.client.sys.create_or_update_acl_policy("mira-read", POLICY)
    enable_kubernetes_auth(server, token_review)
    server.client.auth.kubernetes.create_role(
        "mira",
        bound_service_account_names=["mira"],
        bound_service_account_namespaces=["default"],
        policies=["mira-read"],
        ttl="60s",
    )
    token_file = tmp_path / "token"
    token_file.write_text(token_review.service_account_jwt())
    auth = VaultAuthSettings(method="kubernetes", role="mira", token_file=str(token_file))
    settings = VaultSettings(url=server.url, auth=auth, timeout=2.0)
    backend = VaultSecretsBackend(settings, {})
    try:
        yield backend, token_file
    finally:
        backend.close()


def test_kubernetes_login_reads_and_rereads_rotated_token_file(
    openbao_process: VaultServer,
    token_review: TokenReviewServer,
    kube_backend: tuple[VaultSecretsBackend, Path],
) -> None:
    backend, token_file = kube_backend
    assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    assert "kubernetes auth" in backend.check()
    # The kubelet rotates the projected token; the old one stops being valid.
    old_jwt = token_file.read_text()
    new_jwt = token_review.service_account_jwt()
    token_file.write_text(new_jwt)
    del token_review.valid[old_jwt]
    openbao_process.client.sys.revoke_prefix("auth/kubernetes/login")
    with capture_logs() as logs:
        assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
    assert token_review.reviewed[-1] == new_jwt
    assert [e["reason"] for e in logs if e["event"] == "vault_login"] == ["forbidden"]
    assert new_jwt not in repr(logs)


def test_kubernetes_login_with_rejected_token_is_a_clear_error(
    token_review: TokenReviewServer, kube_backend: tuple[VaultSecretsBackend, Path]
) -> None:
    backend, token_file = kube_backend
    token_file.write_text("not-a-valid.service-account.jwt")
    with pytest.raises(SecretsBackendUnavailable, match="kubernetes login failed") as failure:
        backend.get_secret("github-credentials", "token")
    assert "not-a-valid" not in str(failure.value)
    token_file.unlink()
    with pytest.raises(SecretsBackendUnavailable, match=r"cannot read auth\.token_file"):
        backend.check()


def test_tls_server_is_trusted_through_ca_file_only(openbao_tls: OpenBaoProcess) -> None:
    openbao_tls.client.secrets.kv.v2.create_or_update_secret(
        "github-credentials", secret={"token": GITHUB_TOKEN}
    )
    url, root = openbao_tls.url, openbao_tls.root_token
    with_ca = VaultSecretsBackend(
        VaultSettings(url=url, token=root, ca_file=openbao_tls.ca_file), {}
    )
    without_ca = VaultSecretsBackend(VaultSettings(url=url, token=root), {})
    try:
        assert with_ca.get_secret("github-credentials", "token") == GITHUB_TOKEN
        with pytest.raises(SecretsBackendUnavailable, match="TLS verification failed"):
            without_ca.get_secret("github-credentials", "token")
    finally:
        with_ca.close()
        without_ca.close()


def test_denied_read_relogs_in_exactly_once_then_reports_unavailable(
    vault: VaultServer, make_backend: Factory
) -> None:
    mount_kv_v1(vault, "private")  # the AppRole policy does not cover this mount
    vault.client.secrets.kv.v1.create_or_update_secret(
        "github-credentials", secret={"token": GITHUB_TOKEN}, mount_point="private"
    )
    role_id, secret_id = approle(vault)
    auth = VaultAuthSettings(method="approle", role_id=role_id, secret_id=secret_id)
    backend = make_backend(token=None, auth=auth, mount_point="private", kv_version=1)
    backend.start()
    denied = pytest.raises(SecretsBackendUnavailable, match="permission denied")
    with capture_logs() as logs, denied as failure:
        backend.get_secret("github-credentials", "token")
    assert [e["reason"] for e in logs if e["event"] == "vault_login"] == ["forbidden"]
    assert_no_secret_values(str(failure.value))


def test_hung_server_is_reported_unavailable_within_the_timeout(
    openbao_process: OpenBaoProcess,
) -> None:
    seed(openbao_process)
    settings = VaultSettings(url=openbao_process.url, token=openbao_process.root_token, timeout=1.0)
    backend = VaultSecretsBackend(settings, {})
    try:
        assert backend.get_secret("github-credentials", "token") == GITHUB_TOKEN
        openbao_process.pause()
        started = time.monotonic()
        with pytest.raises(SecretsBackendUnavailable, match=r"no answer within 1\.0s"):
            backend.get_secret("github-credentials", "token")
        assert time.monotonic() - started < 10.0  # the 1 s timeout, not a hang
        openbao_process.resume()
        assert wait_until(lambda: reads_ok(backend), timeout=5.0)
    finally:
        openbao_process.resume()
        backend.close()
