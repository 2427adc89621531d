"""Shared test helpers: waiting on conditions, free ports, and the real service as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


class Changes:
    """Records on_change(path) calls from a backend's watch threads."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, path: str) -> None:
        with self._lock:
            self.paths.append(path)

    def count(self) -> int:
        with self._lock:
            return len(self.paths)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Headers(dict[str, str]):
    """Response headers, looked up by name in any case (HTTP/1.1 names are case-insensitive;
    the engine sends them in lower case)."""

    def __init__(self, items: Any) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body) for any status."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, Headers(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, Headers(exc.headers.items()), exc.read()


class ServiceProcess:
    """`python -m mira.entrypoints.web config.json` as a real subprocess on a free port."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        module: str = "mira.entrypoints.web",
    ) -> None:
        self.workdir = workdir
        self.port = config.setdefault("server", {}).setdefault("port", free_port())
        config["server"].setdefault("host", "127.0.0.1")
        #: where /ready is served: the management listener when the config sets one
        self.management_port: int | None = config.get("management", {}).get("port")
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / "stdout.log"
        self.err_path = workdir / "stderr.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in list(self.env):
            if name.startswith("MIRA_") and name not in (env or {}):
                del self.env[name]
        self.module = module
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def probe_url(self) -> str:
        port = self.management_port or self.port
        return f"http://127.0.0.1:{port}"

    def start(self, wait_ready: bool = True) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, str(self.config_path)],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log_path.open("wb"),
            stderr=self.err_path.open("wb"),
        )
        if wait_ready:
            wait_until(self._ready, timeout=30, message=f"{self.probe_url}/ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"service exited with {self.proc.returncode}: {self.stderr()}")
        try:
            return http("GET", f"{self.probe_url}/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return http("POST", self.url + path, body, **kw)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def lines(self, path: Path | None = None) -> list[dict[str, Any]]:
        """Every stdout (or log file) line, parsed as JSON (fails on a non-JSON line)."""
        text = (path or self.log_path).read_text()
        lines = text.split("\n")[:-1]  # a last line without its newline is still being written
        return [json.loads(line) for line in lines if line.strip()]

    def find(self, message: str, path: Path | None = None) -> list[dict[str, Any]]:
        return [line for line in self.lines(path) if line.get("message") == message]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def running_service(
    workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(workdir, config, env)
    try:
        yield service.start()
    finally:
        service.stop()
