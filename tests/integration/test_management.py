"""The management listener, the token-guarded /admin and the API tokens: real processes, real
HTTP over loopback, real SQLite, secrets rotated through the `file` backend's watched files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_hot_reload import base_config
from tests.integration.test_workers import every_worker_serves, served
from tests.integration.test_workers import start as start_workers
from tests.support import ServiceProcess, free_port, http, wait_until

PLAN = {
    "type": "generate_plan",
    "data": {"name": "Launch", "description": "Go", "goals": ["MVP"], "duration_weeks": 4},
}
API_V1, API_V2, API_LITERAL = "api-token-one-1111", "api-token-two-2222", "literal-token-3333"
ADMIN_V1, ADMIN_V2 = "admin-token-one-aaaa", "admin-token-two-bbbb"
DEADLINE = 20.0


def write_secret(root: Path, name: str, key: str, value: str) -> None:
    """Replace `<root>/<name>/<key>` atomically (what a rotation looks like on disk)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.tmp"
    tmp.write_text(value)
    os.replace(tmp, folder / key)


def common(tmp_path: Path) -> dict[str, Any]:
    """The secrets as files (rotated by replacing them) and a journal file."""
    secrets = tmp_path / "secrets"
    write_secret(secrets, "api", "token", API_V1)
    write_secret(secrets, "admin", "token", ADMIN_V1)
    return {
        "secrets": {"backend": "file", "file": {"directory": str(secrets)}},
        "journal": {"path": str(tmp_path / "journal.db")},
    }


def start(services: list[ServiceProcess], tmp_path: Path, **sections: Any) -> ServiceProcess:
    config = base_config(0, **common(tmp_path), **sections)
    config["server"]["port"] = config["server"].get("port") or free_port()
    svc = ServiceProcess(tmp_path, config)
    services.append(svc)
    svc.start()
    return svc


def managed(**server: Any) -> dict[str, Any]:
    return {
        "management": {"port": free_port(), "token": "secret://admin:token"},
        "server": {"host": "127.0.0.1", "port": free_port(), **server},
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mgmt(svc: ServiceProcess, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    return http("GET", svc.probe_url + path, **kw)


def assert_unauthorized(answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    assert status == 401, body
    error = json.loads(body)
    assert error["status"] == "error" and "Authorization" in error["error"]
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")


def assert_tokens_not_logged(svc: ServiceProcess) -> None:
    text = svc.log_path.read_text() + svc.stderr()
    for token in (API_V1, API_V2, API_LITERAL, ADMIN_V1, ADMIN_V2):
        assert token not in text


# -- API tokens ----------------------------------------------------------------------------
def check_api_tokens_rotate(svc: ServiceProcess, tmp_path: Path) -> None:
    assert_unauthorized(svc.post("/api/v1/messages", PLAN))
    assert_unauthorized(svc.post("/api/v1/messages", PLAN, headers=bearer("wrong-token-000")))
    assert_unauthorized(svc.post("/api/v1/messages", PLAN, headers={"Authorization": API_V1}))
    assert svc.post("/api/v1/messages", PLAN, headers=bearer(API_V1))[0] == 200
    assert svc.post("/api/v1/messages", PLAN, headers=bearer(API_LITERAL))[0] == 200
    write_secret(tmp_path / "secrets", "api", "token", API_V2)
    wait_until(
        lambda: svc.post("/api/v1/messages", PLAN, headers=bearer(API_V2))[0] == 200,
        DEADLINE,
        interval=0.1,
        message="the rotated API token accepted",
    )
    # From the rotation on the old value is refused (every worker serves the same snapshot).
    for _ in range(6):
        assert_unauthorized(svc.post("/api/v1/messages", PLAN, headers=bearer(API_V1)))
    assert svc.post("/api/v1/messages", PLAN, headers=bearer(API_LITERAL))[0] == 200


def test_api_tokens_lock_the_api_and_a_rotated_token_replaces_the_old_one_live(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, server={"api_tokens": ["secret://api:token", API_LITERAL]})
    check_api_tokens_rotate(svc, tmp_path)
    assert not [x for x in svc.lines() if "api_tokens is not set" in x.get("message", "")]
    assert_tokens_not_logged(svc)


def test_without_api_tokens_the_api_is_open_and_a_warning_says_so_once(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path)
    assert svc.post("/api/v1/messages", PLAN)[0] == 200
    warnings = [x for x in svc.lines() if "api_tokens is not set" in x.get("message", "")]
    assert len(warnings) == 1 and warnings[0]["level"] == "WARNING"


# -- the management listener ---------------------------------------------------------------
def check_probes_moved(svc: ServiceProcess) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert svc.get(path)[0] == 404, path
        assert mgmt(svc, path)[0] == 200, path
    detail = json.loads(mgmt(svc, "/ready")[2])
    assert detail["config"]["generation"] == 1
    assert detail["secrets"]["api"]["state"] == "fresh"
    assert detail["journal"]["status"] == "ok"
    assert mgmt(svc, "/openapi.json")[0] == 404  # the API stays on the main port
    assert svc.get("/openapi.json")[0] == 200


def test_probes_and_metrics_move_to_the_management_port(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, **managed(api_tokens=["secret://api:token", API_LITERAL]))
    check_probes_moved(svc)
    check_api_tokens_rotate(svc, tmp_path)
    metrics = mgmt(svc, "/metrics")[2].decode()
    assert 'route="/api/v1/messages",status="200"' in metrics
    assert 'route="/api/v1/messages",status="401"' in metrics


def check_admin(svc: ServiceProcess, tmp_path: Path) -> None:
    for headers in ({}, bearer("not-the-admin-token"), bearer(API_V1)):
        assert_unauthorized(mgmt(svc, "/admin/events", headers=headers))
        assert_unauthorized(mgmt(svc, "/admin/config/history", headers=headers))
    status, _, body = mgmt(svc, "/admin/events?type=ConfigLoaded", headers=bearer(ADMIN_V1))
    assert status == 200, body
    (loaded,) = json.loads(body)["events"]
    assert loaded["type"] == "ConfigLoaded" and loaded["position"] >= 1
    later = mgmt(svc, f"/admin/events?since={loaded['position']}", headers=bearer(ADMIN_V1))
    assert all(e["position"] > loaded["position"] for e in json.loads(later[2])["events"])
    status, _, body = mgmt(svc, "/admin/config/history", headers=bearer(ADMIN_V1))
    assert status == 200
    assert [g["generation"] for g in json.loads(body)["generations"]] == [1]
    bad = mgmt(svc, "/admin/events?since=soon", headers=bearer(ADMIN_V1))
    assert bad[0] == 400 and "since" in json.loads(bad[2])["error"]
    write_secret(tmp_path / "secrets", "admin", "token", ADMIN_V2)
    wait_until(
        lambda: mgmt(svc, "/admin/events", headers=bearer(ADMIN_V2))[0] == 200,
        DEADLINE,
        interval=0.1,
        message="the rotated management token accepted",
    )
    assert_unauthorized(mgmt(svc, "/admin/events", headers=bearer(ADMIN_V1)))
    assert svc.get("/admin/events", headers=bearer(ADMIN_V2))[0] == 404  # not on the API port


def test_admin_endpoints_need_the_current_management_token(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, **managed())
    check_admin(svc, tmp_path)
    assert_tokens_not_logged(svc)


def test_the_main_port_ready_answers_in_general_words_and_the_detail_stays_on_management(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    config = managed()
    config["management"]["public_ready"] = True
    config["shutdown"] = {"drain_delay": 2.0}  # the window in which the main port says 503
    svc = start(services, tmp_path, **config)
    status, _, body = svc.get("/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    for hidden in ("secret", "api", "journal", str(tmp_path), "config.json", "generation"):
        assert hidden not in body.decode()
    assert svc.get("/health")[0] == 404 and svc.get("/metrics")[0] == 404
    detail = mgmt(svc, "/ready")[2].decode()
    assert "journal.db" in detail and '"admin"' in detail
    svc.signal(signal.SIGTERM)  # the drain: unready on both, the main one still says little
    answer = wait_until(
        lambda: (a := svc.get("/ready"))[0] == 503 and a, DEADLINE, message="unready on main"
    )
    public = json.loads(answer[2])
    assert public["status"] in ("draining", "closing", "hooks")
    assert public == {"status": public["status"], "reasons": ["shutting down"]}


def test_without_a_management_port_the_main_port_keeps_the_detailed_probes(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path)
    detail = json.loads(svc.get("/ready")[2])
    assert detail["config"]["generation"] == 1 and "journal" in detail
    assert svc.get("/health")[0] == 200 and svc.get("/metrics")[0] == 200
    assert svc.get("/admin/events")[0] == 404


def test_the_management_listener_answers_through_the_drain_and_closes_last(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, shutdown={"drain_delay": 3.0, "timeout": 5.0}, **managed())
    svc.signal(signal.SIGTERM)
    answer = wait_until(
        lambda: (a := mgmt(svc, "/ready"))[0] == 503 and a, DEADLINE, message="draining"
    )
    assert json.loads(answer[2])["status"] == "draining"
    assert mgmt(svc, "/health")[0] == 200
    assert svc.wait_exit(DEADLINE) == 0


# -- the CLI over --url --------------------------------------------------------------------
def mira(*args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRA_")}
    if token is not None:
        env["MIRA_MANAGEMENT_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_mira_events_and_config_history_read_the_running_service_over_url(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, **managed())
    url = svc.probe_url
    done = mira("events", "--url", url, "--json", "--type", "ConfigLoaded", token=ADMIN_V1)
    assert done.returncode == 0, done.stderr
    (line,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert line["type"] == "ConfigLoaded" and {"position", "time", "correlation_id"} <= set(line)
    done = mira("events", "--url", url, token=ADMIN_V1)
    assert done.returncode == 0 and "ServiceReady" in done.stdout
    history = mira("config", "history", "--url", url, "--json", token=ADMIN_V1)
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout.splitlines()[0])["generation"] == 1
    same = mira("config", "diff", "1", "1", "--url", url, token=ADMIN_V1)
    assert same.returncode == 0 and "no differences" in same.stdout
    for args, token, expected in (
        (("events", "--url", url), "wrong-token-0000", "refused"),
        (("events", "--url", url), None, "MIRA_MANAGEMENT_TOKEN"),
        (("config", "history", "--url", url), "wrong-token-0000", "refused"),
        (("events", "--url", f"http://127.0.0.1:{free_port()}"), ADMIN_V1, "cannot reach"),
    ):
        failed = mira(*args, token=token)
        assert failed.returncode != 0
        assert expected in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
        assert ADMIN_V1 not in failed.stderr


# -- the same with workers: the supervisor serves the management listener ----------------------
def test_with_two_workers_the_supervisor_serves_probes_metrics_and_admin_and_tokens_rotate(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    tokens = {"api_tokens": ["secret://api:token", API_LITERAL]}
    config = managed(**tokens)
    svc = start_workers(services, tmp_path, 2, **common(tmp_path), **config)
    check_probes_moved(svc)
    supervisor = json.loads(mgmt(svc, "/ready")[2])
    assert supervisor["status"] == "ready" and "reasons" not in supervisor
    check_api_tokens_rotate(svc, tmp_path)
    every_worker_serves_with_token(svc)
    metrics = mgmt(svc, "/metrics")[2].decode()
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("mira_http_requests_total{")
        and 'route="/api/v1/messages",status="200"' in line
    ]
    assert served and sum(served) >= 4  # both workers' requests, summed by the supervisor
    check_admin(svc, tmp_path)
    assert not [x for x in svc.lines() if "api_tokens is not set" in x.get("message", "")]
    assert_tokens_not_logged(svc)


def every_worker_serves_with_token(svc: ServiceProcess) -> None:
    """Every worker accepts the rotated token (the kernel picks the worker of a connection)."""
    original, statuses = svc.post, []

    def post(path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        answer = original(path, body, headers=bearer(API_V2), **kw)
        statuses.append(answer[0])
        return answer

    svc.post = post  # type: ignore[method-assign]
    try:
        every_worker_serves(svc, 2, since=len(served(svc)))
    finally:
        svc.post = original  # type: ignore[method-assign]
    assert set(statuses) == {200}


def test_with_two_workers_an_open_api_is_warned_about_once_by_the_supervisor(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start_workers(services, tmp_path, 2, **common(tmp_path))
    every_worker_serves(svc, 2)
    warnings = [x for x in svc.lines() if "api_tokens is not set" in x.get("message", "")]
    assert len(warnings) == 1 and "worker" not in warnings[0]


def test_probes_on_the_management_port_answer_beside_idle_connections(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """The management listener is served by the same engine as server.port: connections that
    send nothing hold no thread, so the kubelet's probes still get their answer."""
    svc = start(services, tmp_path, **managed())
    host, port = svc.probe_url.removeprefix("http://").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(100)]
    try:
        for path in ("/health", "/ready"):
            started = time.monotonic()
            status, _, _ = mgmt(svc, path, timeout=5)
            assert status == 200 and time.monotonic() - started < 1.0, path
    finally:
        for sock in idle:
            sock.close()


# -- journal.path null: /admin reads this run's events from memory --------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_without_a_journal_file_admin_and_mira_events_read_this_runs_events_from_memory(
    tmp_path: Path, services: list[ServiceProcess], workers: int
) -> None:
    """With journal.path null the events live in the (supervisor's) memory; /admin and
    `mira events --url` answer from there, behind the same token, with the same filters."""
    sections = {**common(tmp_path), **managed(), "journal": {"path": None}}
    if workers > 1:
        svc = start_workers(services, tmp_path, workers, **sections)
    else:
        svc = ServiceProcess(tmp_path, base_config(0, **sections))
        services.append(svc)
        svc.start()
    for headers in ({}, bearer("not-the-admin-token")):
        assert_unauthorized(mgmt(svc, "/admin/events", headers=headers))
    status, _, body = mgmt(svc, "/admin/events?type=ConfigLoaded", headers=bearer(ADMIN_V1))
    assert status == 200, body
    (loaded,) = json.loads(body)["events"]
    assert loaded["type"] == "ConfigLoaded" and loaded["position"] >= 1
    every = json.loads(mgmt(svc, "/admin/events", headers=bearer(ADMIN_V1))[2])["events"]
    positions = [e["position"] for e in every]
    assert positions == sorted(positions) and "ServiceReady" in {e["type"] for e in every}
    later = mgmt(svc, f"/admin/events?since={loaded['position']}", headers=bearer(ADMIN_V1))
    assert [e["position"] for e in json.loads(later[2])["events"]] == [
        p for p in positions if p > loaded["position"]
    ]
    history = json.loads(mgmt(svc, "/admin/config/history", headers=bearer(ADMIN_V1))[2])
    assert [g["generation"] for g in history["generations"]] == [1]
    done = mira("events", "--url", svc.probe_url, "--type", "ServiceReady", token=ADMIN_V1)
    assert done.returncode == 0, done.stderr
    assert "ServiceReady" in done.stdout and "ConfigLoaded" not in done.stdout
    assert ADMIN_V1 not in json.dumps(every)
    assert_tokens_not_logged(svc)
