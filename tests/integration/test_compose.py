"""docker-compose.yml brought up with Debian's `docker-compose`, checked, and taken down.

The test runs a copy of the shipped file with four changes: host networking instead of the
published port (compose cannot drop a list entry through an override file), the config
directory swapped for one serving 127.0.0.1 on a free port, a 1 s health interval, and the
build on the host network. Everything else, the healthcheck command included, is the shipped
file's.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.container_images import BuiltImage, run_tool
from tests.integration.docker_engine import Engine
from tests.support import free_port, http, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
COMPOSE = shutil.which("docker-compose")


@pytest.fixture
def compose_project(
    docker_engine: Engine, mira_image: BuiltImage, mira_base_image: str, tmp_path: Path
) -> Iterator[tuple[Any, int]]:
    if COMPOSE is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    assert mira_image.context is not None
    port = free_port()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    shipped = json.loads((mira_image.context / "deploy" / "compose" / "config.json").read_text())
    shipped["server"].update(host="127.0.0.1", port=port)
    (config_dir / "config.json").write_text(json.dumps(shipped))
    for path in (tmp_path, config_dir, config_dir / "config.json"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    spec = yaml.safe_load((mira_image.context / "docker-compose.yml").read_text())
    service = spec["services"]["mira"]
    assert service.pop("ports"), "the shipped file publishes a port"
    service["network_mode"] = "host"
    service["build"]["network"] = "host"
    mounts = [v for v in service["volumes"] if not v.startswith("./deploy/compose:")]
    assert len(mounts) == len(service["volumes"]) - 1, service["volumes"]
    service["volumes"] = [f"{config_dir}:/etc/mira:ro", *mounts]
    service["healthcheck"].update(interval="1s", start_period="20s")
    compose_file = mira_image.context / f"docker-compose.{port}.yml"
    compose_file.write_text(yaml.safe_dump(spec))
    name = f"miratest{uuid.uuid4().hex[:8]}"
    compose = [
        COMPOSE,
        "--project-name",
        name,
        "--project-directory",
        str(mira_image.context),
        "-f",
        str(compose_file),
    ]

    env = {"BASE_IMAGE": mira_base_image}

    def run(*args: str) -> Any:
        return run_tool([*compose, *args], docker_engine, cwd=mira_image.context, env=env)

    try:
        yield run, port
    finally:
        run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        client = docker_engine.client()
        project = {"label": f"com.docker.compose.project={name}"}
        for container in client.containers.list(all=True, filters=project):
            container.remove(force=True)
        compose_file.unlink(missing_ok=True)


def test_compose_up_serves_health_turns_healthy_and_down_exits_cleanly(
    docker_engine: Engine, compose_project: tuple[Any, int]
) -> None:
    run, port = compose_project
    up = run("up", "--detach", "--build")
    assert up.returncode == 0, up.stderr[-3000:]
    client = docker_engine.client()
    [container] = client.containers.list(filters={"label": "com.docker.compose.service=mira"})

    def health() -> str:
        container.reload()
        state = container.attrs["State"]
        assert state["Status"] == "running", container.logs().decode(errors="replace")[-2000:]
        return str(state.get("Health", {}).get("Status"))

    wait_until(lambda: health() == "healthy", timeout=60, interval=0.2, message="healthy")
    status, _, body = http("GET", f"http://127.0.0.1:{port}/health")
    assert status == 200 and json.loads(body)["status"] == "healthy"
    stop = run("stop")
    assert stop.returncode == 0, stop.stderr
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    down = run("down", "--volumes")
    assert down.returncode == 0, down.stderr
    assert not client.containers.list(all=True, filters={"id": container.id})
