"""Kubernetes Secrets backend: the real `kubernetes` client against a local TLS API server.

No cluster can run on the test machines (no Docker engine, no kind), so `FakeKubeApiServer`
speaks the Secrets REST paths, watch streams and 410 Gone over HTTPS on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mira.adapters.kubernetes_secrets import KubernetesSecretsBackend
from mira.domain.config.model import KubernetesSecretsSettings
from mira.domain.ports import SecretNotFound, SecretsBackendUnavailable
from tests.integration.k8s_api_server import (
    FakeKubeApiServer,
    in_cluster_files,
    kube_api,
    write_kubeconfig,
)
from tests.support import Changes, wait_until

__all__ = ["kube_api"]  # the fixture is used by name

pytestmark = pytest.mark.integration

TOKEN_VALUE = "ghp_rotating-secret-value-1"


def in_cluster_backend(
    server: FakeKubeApiServer, directory: Path, **kwargs: object
) -> KubernetesSecretsBackend:
    files = in_cluster_files(directory, server)
    settings = KubernetesSecretsSettings(namespace="default")
    return KubernetesSecretsBackend(
        settings,
        files["environ"],
        token_file=files["token_filename"],
        ca_file=files["cert_filename"],
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def backend(kube_api: FakeKubeApiServer, tmp_path: Path) -> Iterator[KubernetesSecretsBackend]:
    kube_api.put_secret("github-credentials", {"token": TOKEN_VALUE, "user": "mira-bot"})
    instance = in_cluster_backend(kube_api, tmp_path, max_backoff=0.5, request_timeout=2.0)
    try:
        yield instance
    finally:
        instance.close()


def test_reads_secret_and_key_in_cluster_with_the_service_account_token(
    backend: KubernetesSecretsBackend, kube_api: FakeKubeApiServer
) -> None:
    assert backend.get_secret("github-credentials") == {"token": TOKEN_VALUE, "user": "mira-bot"}
    assert backend.get_secret("github-credentials", "token") == TOKEN_VALUE
    assert kube_api.requests and all(r.authorized for r in kube_api.requests)
    assert kube_api.requests[-1].path == "/api/v1/namespaces/default/secrets/github-credentials"


def test_reads_secret_with_a_kubeconfig_context(
    kube_api: FakeKubeApiServer, tmp_path: Path
) -> None:
    kube_api.put_secret("jira-credentials", {"api_token": "jira-tok"}, namespace="tools")
    kubeconfig = write_kubeconfig(tmp_path, kube_api, context="dev")
    settings = KubernetesSecretsSettings(
        namespace="tools", kubeconfig=str(kubeconfig), context="dev"
    )
    backend = KubernetesSecretsBackend(settings, {})
    try:
        assert backend.get_secret("jira-credentials", "api_token") == "jira-tok"
        assert backend.get_secret("tools/jira-credentials") == {"api_token": "jira-tok"}
        assert "tools" in backend.check()
    finally:
        backend.close()


def test_missing_secret_or_key_names_the_reference_and_never_a_value(
    backend: KubernetesSecretsBackend,
) -> None:
    with pytest.raises(SecretNotFound, match="default/nope") as missing:
        backend.get_secret("nope", "token")
    with pytest.raises(SecretNotFound, match="no key 'password'") as no_key:
        backend.get_secret("github-credentials", "password")
    for exc in (missing.value, no_key.value):
        assert TOKEN_VALUE not in str(exc) and TOKEN_VALUE not in repr(exc)
        assert "mira-bot" not in str(exc)


def test_token_file_with_a_trailing_newline_still_authenticates(
    kube_api: FakeKubeApiServer, tmp_path: Path
) -> None:
    kube_api.put_secret("github-credentials", {"token": TOKEN_VALUE})
    files = in_cluster_files(tmp_path, kube_api)
    Path(files["token_filename"]).write_text(kube_api.token + "\n")  # as `echo TOKEN >` does
    backend = KubernetesSecretsBackend(
        KubernetesSecretsSettings(),
        files["environ"],
        token_file=files["token_filename"],
        ca_file=files["cert_filename"],
    )
    try:
        assert backend.get_secret("github-credentials", "token") == TOKEN_VALUE
        assert kube_api.requests[-1].authorized
    finally:
        backend.close()


def test_wrong_token_is_reported_as_refused(kube_api: FakeKubeApiServer, tmp_path: Path) -> None:
    kube_api.put_secret("github-credentials", {"token": TOKEN_VALUE})
    kube_api.token = "another-token"
    backend = in_cluster_backend(kube_api, tmp_path)
    kube_api.token = "s3rv1ce-acc0unt-t0ken"
    try:
        with pytest.raises(SecretsBackendUnavailable, match=r"refused access.*HTTP 401"):
            backend.get_secret("github-credentials")
    finally:
        backend.close()


def test_rotation_reaches_on_change_and_get_secret_within_a_second(
    backend: KubernetesSecretsBackend, kube_api: FakeKubeApiServer
) -> None:
    changes = Changes()
    stop = backend.watch(["github-credentials"], changes)
    try:
        wait_until(lambda: kube_api.open_watch_count() == 1)
        lists_before = kube_api.count_requests(watch=False, list_only=True)
        with capture_logs() as logs:
            kube_api.put_secret("github-credentials", {"token": "rotated-2", "user": "mira-bot"})
            wait_until(lambda: changes.count() == 1, timeout=10.0)
        # Pushed by the watch (no re-list happened), so it lands as fast as the event
        # (benchmarks/secrets_bench.py: p50 1 ms); the wall clock is not asserted here.
        assert kube_api.count_requests(watch=False, list_only=True) == lists_before
        assert changes.paths == ["github-credentials"]
        assert [e["event"] for e in logs] == ["kubernetes_secret_changed"]
        assert "rotated-2" not in repr(logs)
        reads_before = kube_api.count_requests(watch=False)
        assert backend.get_secret("github-credentials", "token") == "rotated-2"
        assert kube_api.count_requests(watch=False) == reads_before  # served from the watch cache
    finally:
        stop()
    wait_until(lambda: kube_api.open_watch_count() == 0, timeout=1.0)  # connection closed


def test_deleted_secret_becomes_not_found(
    backend: KubernetesSecretsBackend, kube_api: FakeKubeApiServer
) -> None:
    changes = Changes()
    stop = backend.watch(["github-credentials"], changes)
    try:
        wait_until(lambda: kube_api.open_watch_count() == 1)
        kube_api.delete_secret("github-credentials")
        wait_until(lambda: changes.count() == 1, timeout=1.0)
        with pytest.raises(SecretNotFound):
            backend.get_secret("github-credentials")
    finally:
        stop()


def test_watch_gone_410_relists_and_still_delivers_the_next_rotation(
    backend: KubernetesSecretsBackend, kube_api: FakeKubeApiServer
) -> None:
    changes = Changes()
    stop = backend.watch(["github-credentials"], changes)
    try:
        wait_until(lambda: kube_api.open_watch_count() == 1)
        lists_before = kube_api.count_requests(watch=False, list_only=True)
        kube_api.expire_watches()
        wait_until(lambda: kube_api.count_requests(watch=False, list_only=True) > lists_before)
        wait_until(lambda: kube_api.open_watch_count() == 1)
        kube_api.put_secret("github-credentials", {"token": "after-410", "user": "mira-bot"})
        wait_until(lambda: changes.count() == 1, timeout=1.0)
        assert backend.get_secret("github-credentials", "token") == "after-410"
    finally:
        stop()


def test_server_down_is_unavailable_and_reads_recover_when_it_returns(
    backend: KubernetesSecretsBackend, kube_api: FakeKubeApiServer
) -> None:
    changes = Changes()
    stop = backend.watch(["github-credentials"], changes)
    try:
        wait_until(lambda: kube_api.open_watch_count() == 1)
        kube_api.stop()
        # Once the watch notices the outage, reads go to the API again and fail clearly.
        wait_until(lambda: _unavailable(backend), timeout=5.0)
        with pytest.raises(SecretsBackendUnavailable, match="unreachable") as down:
            backend.get_secret("github-credentials", "token")
        assert TOKEN_VALUE not in str(down.value)
        with pytest.raises(SecretsBackendUnavailable):
            backend.check()
        kube_api.put_secret("github-credentials", {"token": "while-down", "user": "mira-bot"})
        kube_api.start()
        assert backend.get_secret("github-credentials", "token") == "while-down"
        # The watch resumes with a re-list and reports what changed during the outage.
        wait_until(lambda: changes.count() == 1, timeout=5.0)
        wait_until(lambda: kube_api.open_watch_count() == 1, timeout=5.0)
        kube_api.put_secret("github-credentials", {"token": "after-outage", "user": "mira-bot"})
        wait_until(lambda: changes.count() == 2, timeout=1.0)
        assert backend.get_secret("github-credentials", "token") == "after-outage"
    finally:
        stop()


def _unavailable(backend: KubernetesSecretsBackend) -> bool:
    try:
        backend.get_secret("github-credentials")
    except SecretsBackendUnavailable:
        return True
    return False


def test_stop_function_ends_watch_threads_promptly(
    backend: KubernetesSecretsBackend, kube_api: FakeKubeApiServer
) -> None:
    stop = backend.watch(["github-credentials", "default/github-credentials"], Changes())
    wait_until(lambda: kube_api.open_watch_count() == 1)
    stop()  # returns once the watch threads have ended (their sockets are shut down)
    assert not [t for t in threading.enumerate() if t.name.startswith("mira-k8s-watch")]


def test_importing_the_module_does_not_import_kubernetes() -> None:
    code = (
        "import sys, mira.adapters.kubernetes_secrets\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
