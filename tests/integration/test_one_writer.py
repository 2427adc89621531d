"""One writer, against a real OpenBao: a slow read of the old value that finishes after a newer
read of the rotated one cannot roll the rotation back.

The slowness is deliberate and real: the real Vault backend (hvac against OpenBao) reads the
secret, then the test holds that read before it returns, while the secret rotates in OpenBao
and a second read of the new value completes and is put in use.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from mira.adapters.vault_secrets import VaultSecretsBackend
from mira.app import MiraApplication
from mira.container import Container
from mira.domain import events as ev
from mira.domain.config.model import VaultSettings
from tests.integration.openbao_server import VaultServer, openbao  # noqa: F401
from tests.support import free_port, wait_until

REF = "secret://github-credentials:token"
OLD, NEW = "ghp_one_writer_old_token_1", "ghp_one_writer_new_token_2"


class HeldRead(VaultSecretsBackend):
    """The real backend; the read taken while `hold` is armed waits after reading."""

    def __init__(self, settings: VaultSettings, environ: dict[str, str]) -> None:
        super().__init__(settings, environ)
        self.armed = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()

    def get_secret(self, path: str, key: str | None = None) -> Any:
        value = super().get_secret(path, key)
        if self.armed.is_set():
            self.armed.clear()
            self.holding.set()
            self.release.wait(15)
        return value


@pytest.fixture
def app(openbao: VaultServer, tmp_path: Path) -> Iterator[tuple[MiraApplication, HeldRead]]:  # noqa: F811
    openbao.client.secrets.kv.v2.create_or_update_secret(
        "github-credentials", secret={"token": OLD}
    )
    vault = {"url": openbao.url, "token": openbao.root_token, "timeout": 5}
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "server": {"host": "127.0.0.1", "port": free_port()},
                "secrets": {"backend": "vault", "vault": vault},
                "integrations": {"github": {"token": REF}},
                "logging": {"file": str(tmp_path / "app.log")},
            }
        )
    )
    backend = HeldRead(VaultSettings(**vault), {})
    container = Container()
    container.secrets_backend.override(providers.Object(backend))
    application = MiraApplication(str(config), container=container)
    application.start()
    yield application, backend
    backend.release.set()
    application.stop()


def in_use(application: MiraApplication) -> str:
    value = application.container.secret_cache().get(REF)
    assert value is not None
    return value.reveal()


def test_a_slow_read_of_the_old_value_cannot_roll_a_rotation_back(
    app: tuple[MiraApplication, HeldRead],
    openbao: VaultServer,  # noqa: F811
) -> None:
    application, backend = app
    manager = application.container.secrets()
    assert in_use(application) == OLD
    backend.armed.set()
    slow = threading.Thread(target=manager.refresh)  # reads OLD, then is held
    slow.start()
    assert backend.holding.wait(10), "the slow read never started"
    openbao.client.secrets.kv.v2.create_or_update_secret(
        "github-credentials", secret={"token": NEW}
    )
    assert manager.refresh() is True  # a newer read, of the rotated value, finishes first
    assert in_use(application) == NEW
    backend.release.set()  # the old value arrives last
    slow.join(10)
    journal = application.container.journal()
    wait_until(
        lambda: any(isinstance(e, ev.SecretFetchDiscarded) for e in journal.read()),
        10,
        message="the late read discarded",
    )
    assert in_use(application) == NEW
    rotated = [e for e in journal.read() if isinstance(e, ev.SecretRotated)]
    assert len(rotated) == 1  # one rotation, and no rotation back to the old value
    (discarded,) = [e for e in journal.read() if isinstance(e, ev.SecretFetchDiscarded)]
    assert discarded.secret == "github-credentials" and "newer read" in discarded.reason
