"""File secrets backend on real directories: kubelet-style `..data` swaps and Docker secrets."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mira.adapters.file_secrets import FileSecretsBackend
from mira.domain.config.model import FileSecretsSettings
from mira.domain.ports import SecretNotFound, SecretsBackendUnavailable
from tests.support import Changes, wait_until

pytestmark = pytest.mark.integration


class KubeletVolume:
    """Updates a directory the way the kubelet updates a mounted Secret volume."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def publish(self, data: dict[str, str]) -> None:
        self._count += 1
        version = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._count:06d}"
        (self.directory / version).mkdir()
        for key, value in data.items():
            (self.directory / version / key).write_text(value)
        link, tmp = self.directory / "..data", self.directory / "..data_tmp"
        old = os.readlink(link) if link.is_symlink() else None
        os.symlink(version, tmp)
        os.replace(tmp, link)
        for key in data:
            if not (self.directory / key).is_symlink():
                os.symlink(f"..data/{key}", self.directory / key)
        if old is not None:
            shutil.rmtree(self.directory / old)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[FileSecretsBackend]:
    instance = FileSecretsBackend(FileSecretsSettings(directory=str(tmp_path / "secrets")))
    (tmp_path / "secrets").mkdir()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def volume(tmp_path: Path) -> KubeletVolume:
    vol = KubeletVolume(tmp_path / "secrets" / "db-credentials")
    vol.publish({"username": "user-0", "password": "pass-0"})
    return vol


def test_reads_a_kubernetes_secret_volume_and_one_key(
    backend: FileSecretsBackend, volume: KubeletVolume
) -> None:
    assert backend.get_secret("db-credentials") == {"username": "user-0", "password": "pass-0"}
    assert backend.get_secret("db-credentials", "password") == "pass-0"
    assert backend.check().startswith("ok: 1 secrets")


def test_paired_reads_never_mix_versions_during_500_swaps(
    backend: FileSecretsBackend, volume: KubeletVolume
) -> None:
    done = threading.Event()
    reads, mixed, errors = 0, 0, []

    def reader() -> None:
        nonlocal reads, mixed
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            try:
                secret = backend.get_secret("db-credentials")
            except Exception as exc:
                errors.append(exc)
                continue
            reads += 1
            if secret["username"].split("-")[1] != secret["password"].split("-")[1]:
                mixed += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    swaps = 0
    try:
        while swaps < 600 and time.monotonic() < deadline:
            swaps += 1
            volume.publish({"username": f"user-{swaps}", "password": f"pass-{swaps}"})
    finally:
        done.set()
        thread.join(timeout=10)
    assert swaps >= 500
    assert reads >= 200, f"reader overlapped too few swaps ({reads} reads)"
    assert (mixed, errors) == (0, [])


def test_volume_rotation_reaches_on_change_once_per_rotation(
    backend: FileSecretsBackend, volume: KubeletVolume
) -> None:
    changes = Changes()
    stop = backend.watch(["db-credentials"], changes)
    try:
        with capture_logs() as logs:
            for n in (1, 2, 3):
                volume.publish({"username": f"user-{n}", "password": f"pass-{n}"})
                wait_until(lambda n=n: changes.count() == n, timeout=10.0)  # type: ignore[misc]
                assert backend.get_secret("db-credentials", "password") == f"pass-{n}"
        assert changes.paths == ["db-credentials"] * 3
        assert {e["event"] for e in logs} == {"file_secret_changed"}
        assert "pass-" not in repr(logs)
    finally:
        stop()
    assert not [t for t in threading.enumerate() if t.name == "mira-file-secrets"]


def test_docker_secret_single_file_strips_one_trailing_newline(
    backend: FileSecretsBackend, tmp_path: Path
) -> None:
    (tmp_path / "secrets" / "api_token").write_text("hunter2\n")
    (tmp_path / "secrets" / "multi").write_text("line\n\n")
    assert backend.get_secret("api_token") == "hunter2"
    assert backend.get_secret("multi") == "line\n"
    with pytest.raises(SecretNotFound, match="single value; it has no key 'token'") as no_key:
        backend.get_secret("api_token", "token")
    assert "hunter2" not in str(no_key.value)


def test_docker_secret_replaced_or_created_reaches_on_change(
    backend: FileSecretsBackend, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    (secrets / "api_token").write_text("first\n")
    changes = Changes()
    stop = backend.watch(["api_token", "later_token"], changes)
    try:
        (secrets / "api_token.tmp").write_text("second\n")
        os.replace(secrets / "api_token.tmp", secrets / "api_token")
        wait_until(lambda: changes.paths == ["api_token"], timeout=1.0)
        assert backend.get_secret("api_token") == "second"
        (secrets / "api_token").write_text("third\n")  # rewritten in place
        wait_until(lambda: backend.get_secret("api_token") == "third", timeout=1.0)
        wait_until(lambda: changes.count() >= 2, timeout=1.0)
        (secrets / "later_token").write_text("new\n")
        wait_until(lambda: changes.paths[-1] == "later_token", timeout=1.0)
        assert backend.get_secret("later_token") == "new"
    finally:
        stop()


def test_missing_secrets_and_bad_paths_get_clear_errors(
    backend: FileSecretsBackend, volume: KubeletVolume, tmp_path: Path
) -> None:
    with pytest.raises(SecretNotFound, match="'nope' not found"):
        backend.get_secret("nope")
    with pytest.raises(SecretNotFound, match="no key 'token'") as no_key:
        backend.get_secret("db-credentials", "token")
    assert "pass-0" not in str(no_key.value)
    with pytest.raises(ValueError, match="invalid file secret path"):
        backend.get_secret("../etc/passwd")
    missing_dir = FileSecretsBackend(FileSecretsSettings(directory=str(tmp_path / "absent")))
    with pytest.raises(SecretsBackendUnavailable, match="absent"):
        missing_dir.check()
