"""`mira healthcheck`: the image's HEALTHCHECK probes the address the config names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mira.entrypoints.healthcheck import (
    config_from_command_line,
    probe_address,
    running_service_config,
)
from tests.support import free_port, running_service

pytestmark = pytest.mark.integration
MIRA = str(Path(sys.executable).parent / "mira")


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MIRA, "healthcheck", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_healthy_on_a_moved_port_bound_to_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    config = {"server": {"host": "127.0.0.1", "port": port}, "secrets": {"backend": "env"}}
    with running_service(tmp_path, config) as service:
        result = healthcheck(str(service.config_path))
    assert result.returncode == 0, result.stderr
    assert f"http://127.0.0.1:{port}/health answered 200" in result.stdout


def test_unhealthy_when_nothing_listens_there_saying_where_it_looked(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"server": {"host": "127.0.0.1", "port": port}}))
    result = healthcheck(str(path), "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/health: ")


def test_unhealthy_naming_the_problem_when_the_config_cannot_give_an_address(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"server": {"port": "five thousand"}}))
    result = healthcheck(str(path))
    assert result.returncode == 1
    assert "cannot tell the address" in result.stderr and "server.port" in result.stderr
    missing = healthcheck(str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "nope.json" in missing.stderr


@pytest.mark.parametrize(
    ("host", "probed"),
    [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "::1"), ("127.0.0.2", "127.0.0.2")],
)
def test_a_wildcard_listen_address_is_probed_on_loopback(host: str, probed: str) -> None:
    assert probe_address(host) == probed


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["python", "-m", "mira.entrypoints.web", "/etc/mira/c.json"], "/etc/mira/c.json"),
        (["/opt/venv/bin/python", "-m", "mira.app"], "config.json"),
        (["/opt/venv/bin/mira", "serve", "x.json"], "x.json"),
        (["python", "-c", "pass"], None),
        (["/opt/venv/bin/mira", "healthcheck"], None),
    ],
)
def test_the_config_path_is_read_from_a_mira_command_line(
    argv: list[str], config: str | None
) -> None:
    assert config_from_command_line(argv) == config


def test_the_running_service_is_found_first_at_pid_1_relative_paths_against_its_cwd(
    tmp_path: Path,
) -> None:
    proc = tmp_path / "proc"
    for pid, argv, cwd in (
        (1, ["python", "-m", "mira.entrypoints.web", "conf/a.json"], "/app"),
        (7, ["python", "-m", "mira.app", "/other.json"], "/"),
    ):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (proc / str(pid) / "cwd").symlink_to(cwd)
    assert running_service_config(proc) == "/app/conf/a.json"
    (proc / "1" / "cmdline").write_bytes(b"/sbin/docker-init\0--\0python\0")
    assert running_service_config(proc) == "/other.json"
