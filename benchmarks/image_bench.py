"""The container image: size, build time, start -> /ready and `docker stop` -> exit.

Uses the test harness's engine (one that answers, else a private dockerd it starts as root) and
builds on a local Debian bookworm base (mmdebstrap) since no registry is reachable here:
    python benchmarks/image_bench.py [--trials 7]
Host networking, Mira on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration import docker_engine as engines  # noqa: E402
from tests.integration.container_images import (  # noqa: E402
    build_base_image,
    build_mira_image,
    checkout_copy,
)
from tests.support import free_port  # noqa: E402


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def one_trial(client: object, tag: str, config_dir: Path, port: int) -> tuple[float, float]:
    """(docker run -> first 200 from /ready, docker stop -> exited) in seconds."""
    url = f"http://127.0.0.1:{port}/ready"
    began = time.monotonic()
    container = client.containers.run(  # type: ignore[attr-defined]
        tag,
        ["python", "-m", "mira.entrypoints.web", "/etc/mira/config.json"],
        detach=True,
        network_mode="host",
        volumes={str(config_dir): {"bind": "/etc/mira", "mode": "ro"}},
    )
    try:
        deadline = began + 60
        while not ready(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within 60 s: {container.logs()[-1000:]!r}")
            time.sleep(0.005)
        to_ready = time.monotonic() - began
        began = time.monotonic()
        container.stop(timeout=10)
        code = container.wait(timeout=30)["StatusCode"]
        to_exit = time.monotonic() - began
        if code != 0:
            raise RuntimeError(f"exit code {code}")
        return to_ready, to_exit
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    try:
        engine = engines.shared_engine()
    except engines.EngineUnavailable as exc:
        print(f"image_bench: not run: {exc}")
        return 0
    try:
        print(engine.description)
        base = build_base_image(engine)
        print(f"base {base.tag}: {'reused' if base.seconds == 0 else f'{base.seconds:.1f} s'}")
        with tempfile.TemporaryDirectory(prefix="mira-bench-") as tmp:
            context = checkout_copy(Path(tmp) / "context")
            image = build_mira_image(engine, base.tag, context, tag="mira-bench/mira:dev")
            client = engine.client()
            size = client.images.get(image.tag).attrs["Size"]
            print(f"image {image.tag}: {size / 1e6:.0f} MB, build {image.seconds:.1f} s")
            config_dir = Path(tmp) / "config"
            config_dir.mkdir(mode=0o755)
            port = free_port()
            config = {
                "secrets": {"backend": "env"},
                "server": {"host": "127.0.0.1", "port": port},
                "shutdown": {"drain_delay": 0, "timeout": 5, "hooks_timeout": 2},
            }
            (config_dir / "config.json").write_text(json.dumps(config))
            (config_dir / "config.json").chmod(0o644)
            results = [one_trial(client, image.tag, config_dir, port) for _ in range(args.trials)]
        for name, values in (
            ("start -> /ready", [r[0] for r in results]),
            ("docker stop -> exit 0", [r[1] for r in results]),
        ):
            ms = sorted(v * 1000 for v in values)
            print(
                f"{name}: p50 {statistics.median(ms):.0f} ms, min {ms[0]:.0f}, "
                f"max {ms[-1]:.0f} ({len(ms)} trials)"
            )
    finally:
        engines.stop_shared_engine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
