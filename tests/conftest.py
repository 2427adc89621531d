"""Session-wide fixtures for the container tier, and the summary lines saying what ran."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import docker_engine as engines


@pytest.fixture(scope="session")
def docker_engine() -> engines.Engine:
    """A Docker engine (found, or started by the tests); the tests skip saying why if none."""
    try:
        return engines.shared_engine()
    except engines.EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def mira_base_image(docker_engine: engines.Engine) -> str:
    """A Debian bookworm + Python 3.11 base, built once a session with mmdebstrap."""
    from tests.integration.container_images import ImageBuildError, build_base_image

    if shutil.which("mmdebstrap") is None:
        pytest.skip("no base image: mmdebstrap is not installed (apt-get install mmdebstrap)")
    try:
        built = build_base_image(docker_engine)
    except ImageBuildError as exc:
        pytest.fail(str(exc), pytrace=False)
    docker_engine.notes.append(f"base image {built.tag} ({_took(built.seconds)})")
    return built.tag


@pytest.fixture(scope="session")
def mira_image(docker_engine: engines.Engine, mira_base_image: str) -> Iterator[Any]:
    """Mira's image built from a copy of the checkout on the local base, once a session."""
    from tests.integration.container_images import (
        ImageBuildError,
        build_mira_image,
        checkout_copy,
    )

    with tempfile.TemporaryDirectory(prefix="mira-context-") as tmp:
        context = checkout_copy(Path(tmp))
        try:
            built = build_mira_image(docker_engine, mira_base_image, context)
        except ImageBuildError as exc:
            pytest.fail(f"docker build failed:\n{exc}", pytrace=False)
        docker_engine.notes.append(f"image {built.tag} built in {built.seconds:.1f} s")
        yield built


def _took(seconds: float) -> str:
    return "already there" if seconds == 0 else f"built in {seconds:.0f} s"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    engines.stop_shared_engine()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = [engines.shared_engine_status()]
    vault = sys.modules.get("tests.integration.openbao_server")
    if vault is not None:
        lines += getattr(vault, "VAULT_USED", [])
    lines = [line for line in lines if line]
    if lines:
        terminalreporter.section("real components")
        for line in dict.fromkeys(lines):
            terminalreporter.write_line(line)
