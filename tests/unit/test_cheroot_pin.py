"""cheroot's private names that `mira.adapters.cheroot_server` (the only module using them)
relies on for its drain, pinned to the version the lock installs: an upgrade that moves them
fails here, not in production."""

from __future__ import annotations

import importlib.metadata
import inspect
import re

from cheroot import connections, server

from tests.support import ROOT


def test_the_installed_cheroot_is_the_locked_one() -> None:
    locked = re.search(r"^cheroot==([\w.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert locked is not None
    assert importlib.metadata.version("cheroot") == locked.group(1)


def test_the_private_names_the_drain_uses_exist_with_their_shape() -> None:
    manager = connections.ConnectionManager
    assert list(inspect.signature(manager._from_server_socket).parameters) == [
        "self",
        "server_socket",
    ]
    source = inspect.getsource(manager)
    assert "self._selector" in source and "self._stop_requested" in source
    assert "self._connections = connections.ConnectionManager(self)" in inspect.getsource(
        server.HTTPServer.prepare
    )
    assert list(inspect.signature(server.HTTPServer.bind).parameters) == [
        "self",
        "family",
        "type",
        "proto",
    ]
