"""Shared by the engine benchmark and spikes: start servers, read their CPU, load them with wrk.

Every server is started by us and ended by its PID (its process group, which we created).
Traffic goes to 127.0.0.1 only; every wrk round is bounded by its duration and a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TICK = os.sysconf("SC_CLK_TCK")
PLAN = {
    "type": "generate_plan",
    "data": {
        "name": "Launch",
        "description": "Go live",
        "goals": ["Design", "Build", "Ship"],
        "duration_weeks": 6,
        "start_date": "2026-01-05",
    },
}
ENDPOINTS = ("GET /health", "POST generate_plan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mira_config(tmp: Path, port: int, workers: int, **server: object) -> Path:
    """The service's config: JSON log file at INFO, and server.workers when N > 1."""
    settings: dict[str, object] = {"host": "127.0.0.1", "port": port, **server}
    if workers > 1:
        settings["workers"] = workers
    config = {
        "logging": {"level": "INFO", "json_format": True, "file": str(tmp / f"mira-{port}.log")},
        "config": {"hot_reload": False},
        "secrets": {"backend": "env", "auto_refresh": False},
        "server": settings,
        "shutdown": {"drain_delay": 0, "timeout": 5},
    }
    path = tmp / f"mira-{port}.json"
    path.write_text(json.dumps(config))
    return path


@dataclass
class Engine:
    """One way to serve the two endpoints: a name and how to start it on a port."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def granian_argv(app: str, port: int, workers: int, *extra: str) -> list[str]:
    """granian's own CLI serving `app` (a name in benchmarks/apps.py) on 127.0.0.1:port."""
    return [
        str(Path(sys.executable).parent / "granian"),
        "--interface",
        "wsgi",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--working-dir",
        str(HERE),
        "--log-level",
        "warning",
        *extra,
        f"apps:{app}",
    ]


def engines(workers: int, tmp: Path, port_of: dict[str, int]) -> dict[str, Engine]:
    """Every engine the benchmark and spikes know, keyed by name; each gets its own port."""
    py = sys.executable
    bin_dir = Path(py).parent
    w = str(workers)

    def port(name: str) -> str:
        port_of.setdefault(name, free_port())
        return str(port_of[name])

    def gunicorn(app: str, name: str, *extra: str) -> list[str]:
        return [
            str(bin_dir / "gunicorn"),
            "--chdir",
            str(HERE),
            "-w",
            w,
            "-b",
            f"127.0.0.1:{port(name)}",
            "--log-level",
            "warning",
            *extra,
            app,
        ]

    def granian(app: str, name: str, *extra: str) -> list[str]:
        return granian_argv(app, int(port(name)), workers, *extra)

    cfg = mira_config(tmp, int(port("mira")), workers)
    bounded = mira_config(tmp, int(port("mira-32")), workers, max_threads=32)
    app_cfg = {"MIRA_BENCH_CONFIG": str(mira_config(tmp, 0, 1))}
    cheroot = [py, str(HERE / "spikes" / "cheroot_host.py"), "--port", port("bare-cheroot")]
    return {
        "mira": Engine("mira", [py, "-m", "mira.entrypoints.web", str(cfg)]),
        # as deployed behind a proxy that buffers request bodies: max_threads = threads (32)
        "mira-32": Engine("mira-32", [py, "-m", "mira.entrypoints.web", str(bounded)]),
        "bare-gunicorn": Engine("bare-gunicorn", gunicorn("apps:bare", "bare-gunicorn")),
        "bare-granian": Engine("bare-granian", granian("bare", "bare-granian")),
        "bare-granian-32": Engine(
            "bare-granian-32", granian("bare", "bare-granian-32", "--blocking-threads", "32")
        ),
        "bare-cheroot": Engine("bare-cheroot", cheroot),
        "mira-gunicorn": Engine("mira-gunicorn", gunicorn("apps:mira", "mira-gunicorn"), app_cfg),
        "mira-granian": Engine("mira-granian", granian("mira", "mira-granian"), app_cfg),
    }


class Server:
    """A server process we started, in its own process group; stopped by its PID only."""

    def __init__(self, engine: Engine, port: int, log: Path) -> None:
        self.engine, self.port = engine, port
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            engine.argv,
            cwd=ROOT,
            env={**os.environ, "MIRA_SECRETS_BACKEND": "env", **engine.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_up(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    def cpu_seconds(self) -> float:
        """user+system of the server and every descendant alive now, from /proc."""
        return sum(_cpu(pid) for pid in _tree(self.proc.pid))

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created
                self.proc.wait(5)
        # workers a supervisor left behind are still in our group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


@dataclass
class Round:
    requests: int
    seconds: float
    cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def us_per_request(self) -> float:
        return self.cpu / self.requests * 1e6 if self.requests else float("nan")


def wrk_script(tmp: Path) -> Path:
    path = tmp / "post_plan.lua"
    body = json.dumps(PLAN).replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = "{body}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def load_round(server: Server, endpoint: str, seconds: int, connections: int, lua: Path) -> Round:
    """One bounded wrk run against 127.0.0.1; CPU is the server tree's during the run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    url = f"http://127.0.0.1:{server.port}"
    argv = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s"]
    if endpoint == "POST generate_plan":
        argv += ["-s", str(lua), f"{url}/api/v1/messages"]
    else:
        argv += [f"{url}/health"]
    before = server.cpu_seconds()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu = server.cpu_seconds() - before
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not done:
        raise RuntimeError(f"wrk gave no count:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{server.engine.name}: {bad.group(1)} failed responses:\n{out}")
    took = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    return Round(int(done.group(1)), took, cpu)


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="mira-engines-"))
