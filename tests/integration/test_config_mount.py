"""A config file mounted with subPath in a pod: the real service warns, `mira doctor` says so.

The pod is simulated by the ServiceAccount directory every pod has (created for the test when
this machine has none, and removed after); the config file has no `..data` beside it, exactly
as a subPath bind mount looks from inside the container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mira.adapters.kubernetes_mount import SERVICEACCOUNT_DIR
from tests.integration.test_hot_reload import base_config
from tests.support import ServiceProcess, wait_until


@pytest.fixture
def in_a_pod() -> Iterator[None]:
    created: list[Path] = []
    path = Path(SERVICEACCOUNT_DIR)
    for parent in [*reversed(path.parents), path]:
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    try:
        yield
    finally:
        for directory in reversed(created):
            directory.rmdir()


def test_a_subpath_mounted_config_is_warned_about_at_start_and_by_doctor(
    tmp_path: Path, in_a_pod: None
) -> None:
    config = base_config(0)
    config["server"].pop("port")
    svc = ServiceProcess(tmp_path, config).start()
    try:
        wait_until(
            lambda: svc.find("Hot reload will not see ConfigMap updates"), 10, message="warning"
        )
        (line,) = svc.find("Hot reload will not see ConfigMap updates")
        assert line["level"] == "WARNING" and "subPath" in line["reason"]
    finally:
        svc.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRA_")}
    doctor = subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", "doctor", str(svc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    row = next(x for x in doctor.stdout.splitlines() if x.startswith("config mount"))
    assert "WARN" in row and "subPath" in row
    assert json.loads(svc.config_path.read_text())  # the file itself is fine
