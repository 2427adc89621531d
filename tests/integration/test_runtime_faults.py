"""Faults of the runtime itself, against the real service: a full disk under the log, a stuck
bus, a stop signal while start-up waits for an unreachable Vault, a backend that cannot be
built, and the log lines operators look for at any level."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_hot_reload import atomic_save, base_config, ready_config, svc_config
from tests.support import ServiceProcess, free_port, wait_until

DEADLINE = 15.0


def service(workdir: Path, config: dict[str, Any]) -> ServiceProcess:
    config["server"].pop("port", None)  # a free one
    return ServiceProcess(workdir, config)


def start(services: list[ServiceProcess], svc: ServiceProcess, **kw: Any) -> ServiceProcess:
    services.append(svc)
    return svc.start(**kw)


def metric(svc: ServiceProcess, name: str) -> float:
    text = svc.get("/metrics")[2].decode()
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


# -- a full disk under the log -----------------------------------------------------------------
@contextlib.contextmanager
def full_disk(where: Path) -> Iterator[Path | None]:
    """A real 1 MiB tmpfs filled to the last byte; None where this machine cannot mount."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        filler = where / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"x" * 65536)
                out.flush()
        with contextlib.suppress(OSError), filler.open("ab") as out:  # the last partial block
            while True:
                out.write(b"x")
                out.flush()
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_under_the_log_never_stops_the_service(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    with full_disk(tmp_path / "disk") as filler:
        log_file = tmp_path / "disk" / "mira.log" if filler else Path("/dev/full")
        config = base_config(0, logging={"file": str(log_file)})
        svc = start(services, service(tmp_path, config))
        # The bus still applies changes: a good one, a rejected one (its ERROR line cannot be
        # written either), and a good one after it.
        atomic_save(
            svc.config_path, json.dumps(svc_config(svc, 1, logging={"file": str(log_file)}))
        )
        wait_until(lambda: ready_config(svc)["generation"] == 2, DEADLINE, message="generation 2")
        atomic_save(svc.config_path, '{"logging": {"level": "LOUD"}}')
        wait_until(lambda: ready_config(svc)["last_error"], DEADLINE, message="rejection")
        atomic_save(
            svc.config_path, json.dumps(svc_config(svc, 3, logging={"file": str(log_file)}))
        )
        wait_until(lambda: ready_config(svc)["generation"] == 3, DEADLINE, message="generation 3")
        assert metric(svc, "mira_log_write_errors_total") > 0
        assert metric(svc, "mira_log_lines_dropped_total") > 0
        assert svc.stderr().count("cannot write the log to") == 1  # reported once
        if filler is not None:
            filler.unlink()  # room again: the next lines are written, with the count of the lost
            svc.get("/api/v1/messages")
            wait_until(
                lambda: log_file.exists() and b"Log lines dropped" in log_file.read_bytes(),
                DEADLINE,
                message="the dropped-lines line after recovery",
            )
            dropped = [json.loads(x) for x in log_file.read_text().splitlines() if x.strip()]
            assert next(x for x in dropped if x["message"] == "Log lines dropped")["dropped"] > 0
        svc.signal(signal.SIGTERM)
        assert svc.wait_exit(DEADLINE) == 0


# -- a stuck bus -------------------------------------------------------------------------------
STUCK_APP = """
import sys, threading
from mira.app import MiraApplication
app = MiraApplication(sys.argv[1])
block = threading.Event()
app.hot_reload_config.subscribe("logging.level", lambda value: block.wait())
sys.exit(app.run())
"""


def test_a_stuck_bus_turns_ready_false_and_a_stop_still_ends_within_the_budget(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    (tmp_path / "stuck_app.py").write_text(STUCK_APP)
    shutdown = {"drain_delay": 0, "timeout": 1, "hooks_timeout": 1, "grace_period": 4}
    svc = service(tmp_path, base_config(0, shutdown=shutdown))
    svc.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    svc.module = "stuck_app"
    start(services, svc)
    # A subscriber that never returns holds the bus thread.
    changed = svc_config(svc, 0, logging={"level": "DEBUG"}, shutdown=shutdown)
    atomic_save(svc.config_path, json.dumps(changed))
    wait_until(lambda: svc.get("/ready")[0] == 503, DEADLINE, message="/ready 503")
    body = json.loads(svc.get("/ready")[2])
    assert any("message bus" in reason for reason in body["reasons"])
    started = time.monotonic()
    svc.signal(signal.SIGTERM)
    code = svc.wait_exit(DEADLINE)
    # Within grace_period (4 s), not never: the bus cannot run the drain, so the exit is 1.
    assert code == 1 and time.monotonic() - started < 10
    assert "shutdown did not finish within shutdown.grace_period" in svc.stderr()


# -- a stop signal while start-up waits for Vault ---------------------------------------------
class BlackHole:
    """A TCP port that accepts connections and never answers (a Vault that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.sock.accept()[0])

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_stop_signal_while_start_up_waits_for_vault_exits_0_promptly(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    vault = BlackHole()
    try:
        config = base_config(
            0,
            secrets={
                "backend": "vault",
                "vault": {"url": f"http://127.0.0.1:{vault.port}", "token": "t", "timeout": 30},
            },
            integrations={"github": {"enabled": True, "token": "secret://gh:token"}},
        )
        svc = start(services, service(tmp_path, config), wait_ready=False)
        wait_until(lambda: vault.accepted, DEADLINE, message="start-up asking Vault")
        started = time.monotonic()
        svc.signal(signal.SIGTERM)
        assert svc.wait_exit(DEADLINE) == 0
        # Promptly: not after the 30 s Vault timeout (the bound only tells the two apart).
        assert time.monotonic() - started < 10
        assert svc.find("Shutdown complete")[0]["exit_code"] == 0
    finally:
        vault.close()


def test_the_exit_follows_shutdown_complete_at_once(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, service(tmp_path, base_config(0)))
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(DEADLINE) == 0
    exited = time.time()
    done = svc.find("Shutdown complete")[0]["timestamp"]
    from datetime import datetime

    after = exited - datetime.fromisoformat(done).timestamp()
    assert after < 1.0, f"exited {after:.2f}s after 'Shutdown complete'"


# -- a backend that cannot be built ------------------------------------------------------------
ENTRYPOINTS = [
    ["-m", "mira.entrypoints.web"],
    ["-m", "mira.entrypoints.cli", "serve"],
    ["-m", "mira.app"],
    ["-m", "mira.entrypoints.cli", "doctor"],
]


@pytest.mark.parametrize(
    "kubernetes",
    [{}, {"kubeconfig": "/nonexistent/kubeconfig"}],
    ids=["outside-a-cluster", "missing-kubeconfig"],
)
def test_a_kubernetes_backend_that_cannot_be_built_is_one_clear_message_and_exit_2(
    tmp_path: Path, kubernetes: dict[str, Any]
) -> None:
    config = base_config(0, secrets={"backend": "kubernetes", "kubernetes": kubernetes})
    config["server"]["port"] = free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MIRA_"))}
    for entry in ENTRYPOINTS:
        done = subprocess.run(
            [sys.executable, *entry, str(path)], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 2, (entry, done.stderr)
        assert "Traceback" not in done.stderr and "secrets" in done.stderr, (entry, done.stderr)
        assert len(done.stderr.strip().splitlines()) <= 3, (entry, done.stderr)
    check = subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (
        check.returncode == 1 and "kubernetes" in check.stderr and "Traceback" not in check.stderr
    )


# -- the lines operators look for --------------------------------------------------------------
def test_reload_confirmations_reach_the_log_at_warning_level(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, service(tmp_path, base_config(0)))
    atomic_save(svc.config_path, json.dumps(svc_config(svc, 1, logging={"level": "WARNING"})))
    wait_until(
        lambda: svc.find("Configuration reloaded successfully"), DEADLINE, message="the line"
    )
    (line,) = svc.find("Configuration reloaded successfully")
    assert "logging.level" in line["changed_keys"]
    atomic_save(svc.config_path, json.dumps(svc_config(svc, 2, logging={"level": "WARNING"})))
    wait_until(lambda: len(svc.find("Configuration reloaded successfully")) == 2, DEADLINE)
    svc.get("/api/v1/messages")  # an ordinary INFO line stays below the level
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(DEADLINE) == 0
    api_lines = [x for x in svc.find("Request handled") if x["path"] == "/api/v1/messages"]
    assert svc.find("Shutdown complete") and api_lines == []


def test_after_logrotate_moves_the_file_no_line_goes_to_the_old_one(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    log_file = tmp_path / "app.log"
    svc = start(services, service(tmp_path, base_config(0, logging={"file": str(log_file)})))
    wait_until(lambda: svc.find("Mira started", log_file), DEADLINE, message="start-up line")
    rotated = log_file.with_suffix(".log.1")
    log_file.rename(rotated)
    moved_at = len(rotated.read_bytes())
    for _ in range(3):
        svc.get("/api/v1/messages")  # a 405: one INFO access line each
    wait_until(
        lambda: log_file.exists() and len(svc.find("Request handled", log_file)) == 3,
        DEADLINE,
        message="the lines after the move in the new file",
    )
    assert len(rotated.read_bytes()) == moved_at, "a line after the move went to the old file"
