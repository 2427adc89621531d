"""Where no Docker engine can run, the container tests say why in one line; the run passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_without_an_engine_the_container_tests_skip_saying_why(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
        "DOCKER_HOST": f"unix://{tmp_path}/none.sock",  # nothing answers there
        "DEFAULT_DOCKER_SOCKET_FOR_TESTS": f"unix://{tmp_path}/none-either.sock",
        "DOCKERD_FOR_TESTS": str(tmp_path / "no-dockerd"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_container_image.py",
            "tests/integration/test_compose.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:]
    reason = "no Docker engine answers and dockerd is not installed (apt-get install docker.io"
    assert "SKIPPED" in out and reason in out, out[-3000:]
    summary = [ln for ln in out.splitlines() if ln.startswith("Docker engine: none")]
    assert len(summary) == 1 and reason in summary[0], out[-3000:]
    assert " passed" not in out.splitlines()[-1] and "skipped" in out.splitlines()[-1]
