"""Rotations pushed by the backend reach the service: Kubernetes watch and a file volume.

No Kubernetes cluster can run on the test machines (no Docker engine, no kind): the real
`kubernetes` client talks to `FakeKubeApiServer`, a local TLS server speaking the Secrets
REST paths, watch streams and 410 Gone on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from mira.domain import events as ev
from mira.utils.secrets_manager import get_secrets_manager
from tests.integration.k8s_api_server import FakeKubeApiServer, kube_api, write_kubeconfig
from tests.integration.secrets_service_support import embedded
from tests.integration.test_file_secrets import KubeletVolume
from tests.support import wait_until

__all__ = ["kube_api"]  # the fixture is used by name

pytestmark = pytest.mark.integration

K8S_V1, K8S_V2, K8S_V3 = "ghp_k8s-service-v1", "ghp_k8s-service-v2", "ghp_k8s-service-v3"
FILE_V1, FILE_V2 = "db-pass-service-v1", "db-pass-service-v2"


class Received:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, new_value: Any) -> None:
        with self._lock:
            self.values.append(new_value)

    def revealed(self, key: str) -> list[str]:
        with self._lock:
            return [v[key].reveal() for v in self.values]


def github_ref() -> dict[str, Any]:
    return {"github": {"token": "secret://github-credentials:token"}}


def test_kubernetes_watch_event_reaches_the_callback_and_410_relists(
    kube_api: FakeKubeApiServer, tmp_path: Path
) -> None:
    kube_api.put_secret("github-credentials", {"token": K8S_V1})
    kubeconfig = write_kubeconfig(tmp_path, kube_api)
    config = {
        "secrets": {"backend": "kubernetes", "kubernetes": {"kubeconfig": str(kubeconfig)}},
        "integrations": github_ref(),
    }
    with embedded(tmp_path, config) as service:
        received = Received()
        get_secrets_manager().register_refresh_callback("github-credentials", received)
        wait_until(lambda: kube_api.open_watch_count() >= 1, timeout=5, message="a watch")

        kube_api.put_secret("github-credentials", {"token": K8S_V2})
        # auto_refresh is off: only the watch can deliver it (its latency: secrets_bench.py).
        wait_until(lambda: received.values, timeout=10, message="the watch-driven callback")
        assert received.revealed("token") == [K8S_V2]

        lists_before = kube_api.count_requests(list_only=True, watch=False)
        kube_api.expire_watches()
        wait_until(
            lambda: kube_api.count_requests(list_only=True, watch=False) > lists_before,
            timeout=5,
            message="a re-list after 410 Gone",
        )
        wait_until(lambda: kube_api.open_watch_count() >= 1, timeout=5, message="a new watch")
        kube_api.put_secret("github-credentials", {"token": K8S_V3})
        wait_until(lambda: len(received.values) == 2, timeout=3, message="the next rotation")
        assert received.revealed("token") == [K8S_V2, K8S_V3]
        assert get_secrets_manager().get("secret://github-credentials:token").reveal() == K8S_V3  # type: ignore[union-attr]
        assert len(service.events(ev.SecretRotated)) == 2
        assert service.secret_state("github-credentials")["state"] == "fresh"
        service.assert_no_leak([K8S_V1, K8S_V2, K8S_V3, kube_api.token])


def test_file_volume_swap_reaches_callbacks_and_a_failing_callback_is_isolated(
    tmp_path: Path,
) -> None:
    volume = KubeletVolume(tmp_path / "secrets" / "db-credentials")
    volume.publish({"username": "mira", "password": FILE_V1})
    config = {
        "secrets": {"backend": "file", "file": {"directory": str(tmp_path / "secrets")}},
        "integrations": {"jira": {"api_token": "secret://db-credentials:password"}},
    }
    with embedded(tmp_path, config) as service:
        manager = get_secrets_manager()
        received, redelivered = Received(), []

        def broken(new_value: Any) -> None:
            raise RuntimeError("callback exploded")

        manager.register_refresh_callback("db-credentials", broken)
        manager.register_refresh_callback("db-credentials", received)
        service.container.subscriptions().subscribe(
            "integrations.jira.api_token",
            lambda ref: redelivered.append(manager.get(ref).reveal()),  # type: ignore[union-attr]
        )
        volume.publish({"username": "mira", "password": FILE_V2})
        wait_until(lambda: received.values, timeout=10, message="the file-watch callback")
        assert received.revealed("password") == [FILE_V2]
        assert redelivered == [FILE_V2]
        lines = [json.loads(line) for line in service.log_text().splitlines()]
        failed = [line for line in lines if line["message"] == "Secret refresh callback failed"]
        assert len(failed) == 1 and failed[0]["secret"] == "db-credentials"
        assert "callback exploded" in failed[0]["exception"]
        assert service.ready()[0] == 200
        service.assert_no_leak([FILE_V1, FILE_V2])


def test_rotation_between_the_first_read_and_the_watch_start_is_not_lost(
    kube_api: FakeKubeApiServer, tmp_path: Path
) -> None:
    from mira.adapters.kubernetes_secrets import KubernetesSecretsBackend
    from mira.domain.config.model import KubernetesSecretsSettings

    kube_api.put_secret("github-credentials", {"token": K8S_V1})
    settings = KubernetesSecretsSettings(kubeconfig=str(write_kubeconfig(tmp_path, kube_api)))
    backend = KubernetesSecretsBackend(settings, {})
    changed: list[str] = []
    try:
        assert backend.get_secret("github-credentials", "token") == K8S_V1
        kube_api.put_secret("github-credentials", {"token": K8S_V2})
        backend.watch(["github-credentials"], changed.append)
        wait_until(lambda: changed, timeout=3, message="the missed rotation")
        assert backend.get_secret("github-credentials", "token") == K8S_V2
    finally:
        backend.close()
