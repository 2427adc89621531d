"""Fixtures shared by the integration tests that start the real service."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServiceProcess


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Collects the services a test starts; stops each afterwards, and kills by PID any of its
    worker processes (recorded as `worker_pids`) that outlived its supervisor."""
    started: list[ServiceProcess] = []
    yield started
    for svc in started:
        svc.stop()
        for pid in svc.__dict__.get("worker_pids", []):
            if Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
