"""The image, built from a copy of the checkout and run in a real Docker engine.

Host networking, Mira bound to 127.0.0.1 on a free port: no bridge, no private address.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.container_images import ROOT, BuiltImage, build_mira_image, run_tool
from tests.integration.docker_engine import Engine
from tests.load import stop_under_load
from tests.support import free_port, http, wait_until

# The first test here also builds the base and the image (a few minutes on a busy machine).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

HEALTH_INTERVAL_NS = 300_000_000  # the image's own check, run every 0.3 s instead of 10 s
SIGTERM_BIT = 1 << 14  # bit 15 (SIGTERM) of the SigCgt mask in /proc/PID/status


def mira_config(port: int, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "logging": {"level": "INFO", "json_format": True},
        "config": {"hot_reload": True},
        "secrets": {"backend": "env"},
        "server": {"host": "127.0.0.1", "port": port},
        "shutdown": {"drain_delay": 0, "timeout": 5, "hooks_timeout": 2, "grace_period": 10},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """Replace config.json atomically (write, then rename), readable by the image's user."""
    path = directory / "config.json"
    tmp = directory / ".config.json.tmp"
    tmp.write_text(json.dumps(config))
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return path


@pytest.fixture
def config_dir() -> Iterator[Path]:
    """A directory the container's uid 10001 can read (tmp_path's parents are 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="mira-container-config-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Running:
    container: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reload(self) -> dict[str, Any]:
        self.container.reload()
        return dict(self.container.attrs)

    def logs(self) -> str:
        return str(self.container.logs().decode(errors="replace"))

    def ready(self) -> bool:
        try:
            return http("GET", f"{self.url}/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        def ready_or_exited() -> bool:
            if self.reload()["State"]["Status"] == "exited":
                raise AssertionError(f"container exited:\n{self.logs()[-2000:]}")
            return self.ready()

        wait_until(ready_or_exited, timeout=timeout, interval=0.05, message=f"{self.url}/ready")

    def exit_code(self, timeout: float = 30) -> int:
        return int(self.container.wait(timeout=timeout)["StatusCode"])


@pytest.fixture
def run_mira(docker_engine: Engine, mira_image: BuiltImage) -> Iterator[Any]:
    """Start containers of the image (host network); every one is removed afterwards."""
    client = docker_engine.client()
    started: list[Any] = []

    def run(
        port: int, volumes: dict[str, Any], command: list[str] | None = None, **options: Any
    ) -> Running:
        container = client.containers.run(
            mira_image.tag,
            command=command,
            detach=True,
            network_mode="host",
            volumes=volumes,
            healthcheck={"interval": HEALTH_INTERVAL_NS, "start_period": 10_000_000_000},
            **options,
        )
        started.append(container)
        return Running(container, port)

    try:
        yield run
    finally:
        for container in started:
            container.remove(force=True)
        client.close()


def in_directory(config_dir: Path, port: int) -> tuple[dict[str, Any], list[str]]:
    """The config directory mounted at /etc/mira, the command naming the file in it."""
    volumes = {str(config_dir): {"bind": "/etc/mira", "mode": "ro"}}
    return volumes, ["python", "-m", "mira.entrypoints.web", "/etc/mira/config.json"]


def test_the_image_user_is_numeric_and_not_root(docker_engine: Engine, mira_image: Any) -> None:
    config = docker_engine.client().images.get(mira_image.tag).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "mira", "healthcheck"]


@pytest.mark.parametrize("mount", ["file-over-default", "directory-with-command"])
def test_serves_health_and_turns_healthy_on_a_moved_port_bound_to_loopback(
    run_mira: Any, config_dir: Path, mount: str
) -> None:
    port = free_port()
    path = write_config(config_dir, mira_config(port))
    if mount == "file-over-default":  # the image's own CMD, its /app/config.json replaced
        volumes = {str(path): {"bind": "/app/config.json", "mode": "ro"}}
        command = None
    else:
        volumes, command = in_directory(config_dir, port)
    svc = run_mira(port, volumes, command)
    svc.wait_ready()
    assert http("GET", f"{svc.url}/health")[0] == 200
    pid = svc.reload()["State"]["Pid"]
    uids = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if "Uid:" in ln)
    assert uids.split()[1:] == ["10001"] * 4, uids
    wait_until(
        lambda: svc.reload()["State"]["Health"]["Status"] == "healthy",
        timeout=30,
        interval=0.1,
        message=f"HEALTHCHECK healthy: {svc.reload()['State'].get('Health')}",
    )
    log = svc.reload()["State"]["Health"]["Log"][-1]
    assert f"http://127.0.0.1:{port}/health answered 200" in log["Output"]


def test_a_mounted_config_change_is_applied_without_a_restart(
    run_mira: Any, config_dir: Path
) -> None:
    port = free_port()
    write_config(config_dir, mira_config(port))
    svc = run_mira(port, *in_directory(config_dir, port))
    svc.wait_ready()
    started_at = svc.reload()["State"]["StartedAt"]
    assert json.loads(http("GET", f"{svc.url}/ready")[2])["config"]["generation"] == 1
    write_config(config_dir, mira_config(port, logging={"level": "DEBUG"}))

    def generation() -> int:
        return int(json.loads(http("GET", f"{svc.url}/ready")[2])["config"]["generation"])

    wait_until(lambda: generation() == 2, timeout=15, message="the new config applied")
    attrs = svc.reload()
    assert attrs["State"]["StartedAt"] == started_at and attrs["RestartCount"] == 0


PLAN = json.dumps(
    {
        "type": "generate_plan",
        "data": {"name": "Load", "description": "d", "goals": ["a", "b"], "duration_weeks": 4},
    }
)


#: This machine's kernel (kernel.unprivileged_bpf_disabled=2) lets a process attach the socket
#: filter that drops new SYNs at close only with CAP_NET_ADMIN, which the image's user 10001 does
#: not have (Docker gives a non-root user no effective capabilities, cap_add or not).
AS_ROOT_WITH_NET_ADMIN = {"user": "0:0", "cap_add": ["NET_ADMIN"]}


@pytest.mark.parametrize("options", [{}, AS_ROOT_WITH_NET_ADMIN], ids=["image-user", "net-admin"])
def test_docker_stop_under_load_drains_and_exits_0_failing_no_accepted_request(
    run_mira: Any, config_dir: Path, options: dict[str, Any]
) -> None:
    """With the SYN filter, no request fails. Where the kernel refuses it to the image's user
    (the listener_filter_unavailable WARNING says so), a connection whose handshake completes
    in the instant the listener closes is reset, or closed before its request is read: at most
    one per client, never a request the service began, nothing else fails."""
    port = free_port()
    # As the single-process steady-load tests: keep-alive clients need one request's time
    # (drain_delay) to be told `Connection: close` before the listener closes.
    shutdown = {"drain_delay": 1.0, "timeout": 5, "hooks_timeout": 2, "grace_period": 10}
    write_config(config_dir, mira_config(port, shutdown=shutdown))
    svc = run_mira(port, *in_directory(config_dir, port), **options)
    svc.wait_ready()
    took = 0.0

    def stop() -> None:
        nonlocal took
        began = time.monotonic()
        svc.container.stop(timeout=10)  # SIGTERM, SIGKILL after 10 s
        took = time.monotonic() - began
        assert svc.exit_code() == 0, svc.logs()[-2000:]

    clients = 6
    result = stop_under_load(port, PLAN, stop, clients=clients, flowing=50, requests=2000)
    logs = svc.logs()
    if options or "listener_filter_unavailable" not in logs:
        assert result.failures == [], result.failures[:5]
    else:  # the fallback: connections dropped unread at the close only
        assert len(result.failures) <= clients, result.failures
        dropped = ("Connection reset", "RemoteDisconnected")
        assert all(any(d in f for d in dropped) for f in result.failures), result
        assert '"load-' in logs  # the requests' ids are in their log lines
        assert not [i for i in result.failed_ids if f'"{i}"' in logs], "a failed one was handled"
    if options:
        assert "listener_filter_unavailable" not in logs  # the filter dropped new SYNs
    assert result.ok >= 50 and result.refused >= 1, result
    assert took < 10, f"docker stop took {took:.1f} s: it had to SIGKILL"
    assert "Shutdown complete" in logs


def test_docker_stop_during_start_up_exits_0(run_mira: Any, config_dir: Path) -> None:
    port = free_port()
    write_config(config_dir, mira_config(port))
    svc = run_mira(port, *in_directory(config_dir, port))
    pid = svc.reload()["State"]["Pid"]

    def catches_sigterm() -> bool:
        status = Path(f"/proc/{pid}/status").read_text()
        mask = next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1]
        return bool(int(mask, 16) & SIGTERM_BIT)

    # As soon as PID 1 can take the signal (before it, the kernel drops SIGTERM for PID 1).
    wait_until(catches_sigterm, timeout=10, interval=0.002, message="SIGTERM handler installed")
    began = time.monotonic()
    svc.container.stop(timeout=10)
    took = time.monotonic() - began
    assert svc.exit_code() == 0, svc.logs()[-2000:]
    assert took < 10, f"docker stop took {took:.1f} s: it had to SIGKILL"
    assert "ServiceReady" not in svc.logs(), "the stop came after start-up, not during it"


def test_only_a_source_change_rebuilds_without_network_from_the_dependency_layer(
    docker_engine: Engine, mira_image: BuiltImage, mira_base_image: str, tmp_path: Path
) -> None:
    """`--network none`: a dependency step that ran again (not from cache) would fail."""
    assert mira_image.context is not None
    context = Path(shutil.copytree(mira_image.context, tmp_path / "context", symlinks=True))
    marker = f"offline-{os.getpid()}"
    init = context / "src" / "mira" / "__init__.py"
    init.write_text(init.read_text() + f'\nBUILD_MARKER = "{marker}"\n')
    built = build_mira_image(
        docker_engine, mira_base_image, context, "mira-test/mira:offline", "none"
    )
    client = docker_engine.client()
    try:
        out = client.containers.run(
            built.tag,
            ["python", "-c", "import mira; print(mira.BUILD_MARKER)"],
            network_mode="none",
            remove=True,
        )
        assert out.decode().strip() == marker
    finally:
        client.images.remove(built.tag, force=True)


def test_a_missing_base_image_names_the_build_argument_to_set(docker_engine: Engine) -> None:
    script = ROOT / "deploy" / "docker" / "build-image.sh"
    result = run_tool([str(script), "mira-test/no-such-base:0", "mira-test/never:0"], docker_engine)
    assert result.returncode == 2
    assert "BASE_IMAGE" in result.stderr and "mira-test/no-such-base:0" in result.stderr
