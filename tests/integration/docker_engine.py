"""A Docker engine for the container tests: one that answers, else a private dockerd we start.

One engine per test session (`shared_engine()`), stopped by PID at the end (`stop_shared_engine()`,
called from tests/conftest.py). Where none can run, `EngineUnavailable` says why in one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 40.0
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class EngineUnavailable(Exception):
    """No Docker engine answers and none can be started here; the message says why."""


@dataclass
class Engine:
    """A Docker engine that answered a ping; `proc` is set when this session started it."""

    host: str
    description: str
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def client(self, timeout: int = 120) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def env(self) -> dict[str, str]:
        """The environment for a `docker` / `docker-compose` command against this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}


def answers(host: str) -> bool:
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # docker.errors.DockerException, requests errors, a missing socket
        return False


def existing_engine() -> Engine | None:
    default = os.environ.get("DEFAULT_DOCKER_SOCKET_FOR_TESTS", DEFAULT_SOCKET)
    for host in filter(None, (os.environ.get("DOCKER_HOST"), default)):
        if answers(host):
            return Engine(host=host, description=f"the Docker engine already answering at {host}")
    return None


def start_dockerd() -> Engine:
    """dockerd on a private socket, data in a temporary directory, no bridge, no iptables."""
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine answers, and starting dockerd needs root")
    chosen = os.environ.get("DOCKERD_FOR_TESTS")  # a path; the tests' own no-engine check
    dockerd = shutil.which(chosen) if chosen else shutil.which("dockerd") or "/usr/sbin/dockerd"
    if dockerd is None or not os.access(dockerd, os.X_OK):
        raise EngineUnavailable(
            "no Docker engine answers and dockerd is not installed (apt-get install docker.io; "
            ".ci/run does)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="mira-dockerd-"))
    host = f"unix://{workdir}/docker.sock"
    log_path = workdir / "dockerd.log"
    cmd = [
        dockerd,
        f"--host={host}",
        f"--data-root={workdir}/data",
        f"--exec-root={workdir}/exec",
        f"--pidfile={workdir}/dockerd.pid",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--log-level=warn",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = Engine(host=host, description="", proc=proc, workdir=workdir)
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "hung"
            reason = _last_error(log_path)
            stop_engine(engine)
            raise EngineUnavailable(f"dockerd {state} at start-up: {reason}")
        time.sleep(0.1)
    version = engine.client().version().get("Version", "?")
    engine.description = f"dockerd {version} started by the tests (pid {proc.pid}, {host})"
    return engine


def _last_error(log_path: Path) -> str:
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln]
    return (errors or lines or ["(no output)"])[-1][-300:]


def stop_engine(engine: Engine) -> None:
    """Stop a dockerd we started (SIGTERM, then SIGKILL) and remove its directory."""
    proc = engine.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if engine.workdir is None:
        return
    containerd_pid = engine.workdir / "exec" / "containerd" / "containerd.pid"
    with contextlib.suppress(OSError, ValueError):  # managed containerd left by a killed dockerd
        os.kill(int(containerd_pid.read_text().strip()), signal.SIGKILL)
    _unmount_under(engine.workdir)
    shutil.rmtree(engine.workdir, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(root))
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


_shared: Engine | EngineUnavailable | None = None


def shared_engine() -> Engine:
    """This session's engine, found or started on first use; raises EngineUnavailable."""
    global _shared
    if _shared is None:
        try:
            _shared = existing_engine() or start_dockerd()
        except EngineUnavailable as exc:
            _shared = exc
    if isinstance(_shared, EngineUnavailable):
        raise _shared
    return _shared


def shared_engine_status() -> str | None:
    """One line for the test summary: which engine ran, or why none did; None if never asked."""
    if _shared is None:
        return None
    if isinstance(_shared, EngineUnavailable):
        return f"Docker engine: none, container tests did not run: {_shared}"
    return "; ".join([f"Docker engine: {_shared.description}", *_shared.notes])


def stop_shared_engine() -> None:
    if isinstance(_shared, Engine):
        stop_engine(_shared)
