"""Time from SIGTERM to process exit of the real service, idle and under load.

Each trial starts `python -m mira.entrypoints.web` on a free 127.0.0.1 port (drain_delay 0,
so the figure is Mira's own drain + hooks + interpreter exit), optionally puts load on it
(wrk -t2 -c32, or bounded Python keep-alive clients without wrk), sends SIGTERM and waits for
the exit. Prints p50/max of the wall time and of the in-app `total_seconds` logged with
"Shutdown complete". Run: `.venv/bin/python benchmarks/shutdown_time.py [--trials 7]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD_PATH = "/health"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("service not ready in time")


class PythonLoad:
    """Keep-alive clients on LOAD_PATH, bounded in count (20k each) and time (30 s)."""

    def __init__(self, port: int, clients: int = 8) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(port,), daemon=True) for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        deadline = time.monotonic() + 30
        for _ in range(20_000):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                conn.request("GET", LOAD_PATH)
                conn.getresponse().read()
            except OSError:
                return  # refused once the listener is closed
            except http.client.HTTPException:
                return

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


class WrkLoad:
    """wrk -t2 -c32 for at most 30 s; stopped by its PID once the service has exited."""

    def __init__(self, port: int) -> None:
        self._proc = subprocess.Popen(
            ["wrk", "-t2", "-c32", "-d30s", f"http://127.0.0.1:{port}{LOAD_PATH}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
        self._proc.wait(10)


def trial(workdir: Path, loaded: bool) -> tuple[float, float]:
    """One start, (load), SIGTERM, exit; returns (wall seconds, in-app total_seconds)."""
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port, "threads": 32},
        "shutdown": {"drain_delay": 0, "timeout": 10},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    log_path = workdir / "stdout.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRA_")}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mira.entrypoints.web", "config.json"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    load: WrkLoad | PythonLoad | None = None
    try:
        wait_ready(port, proc)
        if loaded:
            load = WrkLoad(port) if shutil.which("wrk") else PythonLoad(port)
            time.sleep(1.0)  # let the load reach a steady state
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        wall = time.perf_counter() - started
    finally:
        if load is not None:
            load.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if code != 0:
        raise RuntimeError(f"exit code {code}; see {log_path}")
    return wall, in_app_total(log_path)


def in_app_total(log_path: Path) -> float:
    for line in log_path.read_text().splitlines():
        if '"Shutdown complete"' in line:
            return float(json.loads(line)["total_seconds"])
    raise RuntimeError(f"no 'Shutdown complete' line in {log_path}")


def summary(label: str, results: list[tuple[float, float]]) -> str:
    walls = [w * 1000 for w, _ in results]
    inside = [t * 1000 for _, t in results]
    return (
        f"{label:<26} n={len(results)}  SIGTERM->exit p50 {statistics.median(walls):7.1f} ms"
        f"  max {max(walls):7.1f} ms   in-app p50 {statistics.median(inside):6.1f} ms"
        f"  max {max(inside):6.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    if not 1 <= args.trials <= 50:
        parser.error("--trials must be between 1 and 50")
    load_name = "wrk -t2 -c32" if shutil.which("wrk") else "python clients x8"
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for loaded in (False, True):
            results = []
            for n in range(args.trials):
                workdir = Path(tmp) / f"{'load' if loaded else 'idle'}-{n}"
                workdir.mkdir()
                results.append(trial(workdir, loaded))
            rows.append(summary(f"under load ({load_name})" if loaded else "idle", results))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
