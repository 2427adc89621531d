"""granian's private names that `mira.adapters.granian_server` (the only module using them)
hosts granian's worker through, pinned to the version the lock installs: an upgrade that moves
or reshapes them fails here, not in production."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re

from mira.adapters.granian_server import GRANIAN_PRIVATE
from tests.support import ROOT


def test_the_installed_granian_is_the_locked_one() -> None:
    locked = re.search(r"^granian==([\w.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert locked is not None
    assert importlib.metadata.version("granian") == locked.group(1)


def test_the_private_names_the_adapter_uses_exist() -> None:
    for dotted in GRANIAN_PRIVATE:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    core = importlib.import_module("granian._granian")
    for method in ("serve_str", "serve_mtr"):
        assert hasattr(core.WSGIWorker, method), method
    assert hasattr(core.WorkerSignal, "add_cb") and hasattr(core.WorkerSignal, "set")


def test_granians_own_worker_calls_wsgiworker_with_the_arguments_the_adapter_passes() -> None:
    """The adapter passes WSGIWorker's arguments in the order granian's own process worker
    does; that call site must still read the same."""
    source = inspect.getsource(importlib.import_module("granian.server.mp").MPServer)
    call = source[source.index("worker = WSGIWorker(") :]
    call = call[: call.index(")")]
    names = [line.strip().rstrip(",") for line in call.splitlines()[1:] if line.strip()]
    assert names == [
        "worker_id",
        "sock",
        "ipc",
        "runtime_threads",
        "runtime_blocking_threads",
        "blocking_threads",
        "blocking_threads_idle_timeout",
        "backpressure",
        "http_mode",
        "http1_settings",
        "http2_settings",
        "static_path",
        "*ssl_ctx",
        "metrics",
    ]
    scheduler = inspect.signature(importlib.import_module("granian._futures")._new_cbscheduler)
    assert list(scheduler.parameters) == ["loop", "cb", "impl_asyncio"]
