"""The real service as a subprocess: endpoints, JSON log lines, correlation ids, start-up errors."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ServiceProcess, free_port, http, wait_until

GUIDE_FIELDS = (
    "timestamp",
    "level",
    "logger",
    "message",
    "correlation_id",
    "module",
    "function",
    "line",
)
PLAN = {
    "type": "generate_plan",
    "data": {
        "name": "Launch",
        "description": "Go live",
        "goals": ["MVP", "Beta"],
        "duration_weeks": 12,
        "start_date": "2026-01-05",
    },
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> ServiceProcess:
    workdir = tmp_path_factory.mktemp("svc")
    svc = ServiceProcess(
        workdir,
        {"logging": {"level": "INFO", "json_format": True}, "server": {"max_body_bytes": 4096}},
    )
    svc.start()
    yield svc  # type: ignore[misc]
    svc.stop()


def test_health_ready_and_metrics(service: ServiceProcess) -> None:
    status, _, body = service.get("/health")
    assert (status, json.loads(body)) == (200, {"status": "healthy"})
    status, _, body = service.get("/ready")
    assert status == 200 and json.loads(body)["status"] == "ready"
    service.get("/health")
    status, headers, body = service.get("/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert re.search(
        r'mira_http_requests_total\{method="GET",route="/health",status="200"\} \d', text
    )
    assert "mira_http_request_duration_seconds_bucket" in text
    assert 'mira_lifecycle_phase{phase="ready"} 1.0' in text
    assert "mira_http_request_errors_total" in text


def test_generate_plan_returns_the_plan(service: ServiceProcess) -> None:
    status, _, body = service.post("/api/v1/messages", PLAN)
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success"
    assert [m["week"] for m in payload["data"]["milestones"]] == [6, 12]
    assert payload["data"]["milestones"][1]["due_date"] == "2026-03-29"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"type": "generate_plan", "data": {"name": "x",', "body: malformed JSON at line 1"),
        (json.dumps({"type": "bake"}).encode(), "supported types: generate_plan"),
        (
            json.dumps(
                {"type": "generate_plan", "data": {"name": "x", "goals": [], "duration_weeks": 3}}
            ).encode(),
            "data.goals",
        ),
        (
            json.dumps(
                {
                    "type": "generate_plan",
                    "data": {"name": "x", "goals": ["a"], "duration_weeks": 0},
                }
            ).encode(),
            "data.duration_weeks",
        ),
        (
            json.dumps(
                {"type": "generate_plan", "data": {"goals": ["a"], "duration_weeks": 2}}
            ).encode(),
            "data.name",
        ),
    ],
)
def test_bad_messages_get_400_naming_the_problem(
    service: ServiceProcess, raw: bytes, expected: str
) -> None:
    status, _, body = service.post("/api/v1/messages", raw=raw)
    payload = json.loads(body)
    assert status == 400 and payload["status"] == "error"
    assert expected in payload["error"]
    assert payload["correlation_id"]


def test_body_over_the_limit_gets_413(service: ServiceProcess) -> None:
    big = json.dumps({"type": "generate_plan", "data": {"name": "x" * 5000}}).encode()
    status, _, body = service.post("/api/v1/messages", raw=big)
    assert status == 413 and "max_body_bytes" in json.loads(body)["error"]


def test_correlation_id_round_trip_and_log_lines(service: ServiceProcess) -> None:
    status, headers, _ = service.post("/api/v1/messages", PLAN, headers={"X-Request-ID": "req-42"})
    assert status == 200 and headers["X-Request-ID"] == "req-42"
    line = wait_until(
        lambda: [x for x in service.find("Processing message") if x["correlation_id"] == "req-42"],
        message="log line",
    )[0]
    assert all(field in line for field in GUIDE_FIELDS)
    assert line["logger"] == "mira.app" and line["level"] == "INFO"
    assert line["message_type"] == "generate_plan" and line["function"] == "process_message"
    assert isinstance(line["line"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", line["timestamp"])
    access = wait_until(
        lambda: [x for x in service.find("Request handled") if x["correlation_id"] == "req-42"],
        message="access line",
    )
    assert access and access[0]["status"] == 200 and access[0]["route"] == "/api/v1/messages"


def test_probe_access_lines_are_debug_and_left_out_at_info(
    service: ServiceProcess, tmp_path: Path
) -> None:
    """At INFO a successful probe writes no access line, an API request and a failing probe do;
    at DEBUG the probes' lines are there, at DEBUG."""
    service.get("/health", headers={"X-Request-ID": "probe-info-1"})
    service.get("/metrics", headers={"X-Request-ID": "probe-info-2"})
    service.post("/api/v1/messages", PLAN, headers={"X-Request-ID": "after-probes-1"})
    wait_until(
        lambda: [
            x for x in service.find("Request handled") if x["correlation_id"] == "after-probes-1"
        ],
        message="the API request's access line",
    )
    ids = {x["correlation_id"] for x in service.find("Request handled")}
    assert not ids & {"probe-info-1", "probe-info-2"}
    debug = ServiceProcess(tmp_path, {"logging": {"level": "DEBUG", "json_format": True}})
    debug.start()
    try:
        debug.get("/health", headers={"X-Request-ID": "probe-debug-1"})
        (line,) = wait_until(
            lambda: [
                x for x in debug.find("Request handled") if x["correlation_id"] == "probe-debug-1"
            ],
            message="the probe's DEBUG access line",
        )
        assert (line["level"], line["path"], line["status"]) == ("DEBUG", "/health", 200)
    finally:
        debug.stop()


def test_traceparent_trace_id_is_used_and_bad_ids_are_replaced(service: ServiceProcess) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    _, headers, _ = service.get(
        "/health", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    )
    assert headers["X-Request-ID"] == trace
    _, headers, _ = service.get("/health", headers={"X-Request-ID": "x" * 129})
    assert headers["X-Request-ID"] != "x" * 129 and len(headers["X-Request-ID"]) == 36
    _, headers, _ = service.get("/health")
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Request-ID"])


def test_every_stdout_line_is_json_and_start_up_lines_share_a_command_id(
    service: ServiceProcess,
) -> None:
    lines = service.lines()
    assert all(all(f in line for f in GUIDE_FIELDS) for line in lines)
    loaded = next(x for x in lines if x["message"] == "ConfigLoaded")
    started = next(x for x in lines if x["message"] == "Mira started")
    assert loaded["correlation_id"] == started["correlation_id"] != "-"


def test_sigterm_exits_zero_with_shutdown_logged(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path, {}).start()
    try:
        svc.signal(signal.SIGTERM)
        assert svc.wait_exit(30) == 0
        messages = [x["message"] for x in svc.lines()]
        assert messages.index("ShutdownRequested") < messages.index("Stopped")
        assert "Shutdown complete" in messages
    finally:
        svc.stop()


def _run(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.web", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_config_file_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    result = _run(tmp_path, ["nowhere.json"])
    assert result.returncode == 2
    assert "nowhere.json" in result.stderr and "Traceback" not in result.stderr


def test_broken_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{\n "logging": {\n  "level": "INFO"\n }\n')
    result = _run(tmp_path, ["c.json"])
    assert result.returncode == 2
    assert re.search(r"c\.json: invalid JSON at line \d+, column \d+", result.stderr)
    assert "Traceback" not in result.stderr


def test_every_bad_value_is_listed(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(
        json.dumps({"logging": {"level": "LOUD"}, "server": {"port": 70000}})
    )
    result = _run(tmp_path, ["c.json"])
    assert result.returncode == 2
    assert "logging.level" in result.stderr and "server.port" in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        (tmp_path / "c.json").write_text(
            json.dumps({"server": {"host": "127.0.0.1", "port": port}})
        )
        result = _run(tmp_path, ["c.json"])
    assert result.returncode == 1
    assert "address already in use" in result.stderr and "Traceback" not in result.stderr


def test_config_check_prints_masked_config_or_lists_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "integrations": {
                    "github": {"token": "ghp_very_secret_1"},
                    "jira": {"api_token": "secret://jira:api_token"},
                }
            }
        )
    )
    ok = subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", "config", "check", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0
    printed = json.loads(ok.stdout)
    assert printed["integrations"]["github"]["token"] == "**********"
    assert "ghp_very_secret_1" not in ok.stdout + ok.stderr
    assert "secret://jira" not in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"logging": {"level": 1}, "secrets": {"refresh_interval": 0}}))
    fail = subprocess.run(
        [sys.executable, "-m", "mira.entrypoints.cli", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fail.returncode == 1
    assert "logging.level" in fail.stderr and "secrets.refresh_interval" in fail.stderr


def test_log_file_is_created_and_reopened_after_rotation(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "nested" / "app.log"
    svc = ServiceProcess(tmp_path, {"logging": {"file": str(log_file)}}).start()
    try:
        wait_until(lambda: svc.find("Mira started", log_file), message="start-up line in the file")
        log_file.rename(log_file.with_suffix(".log.1"))
        wait_until(
            lambda: (
                svc.get("/api/v1/messages")[0]
                and log_file.exists()
                and svc.find("Request handled", log_file)
            ),
            timeout=10,
            message="a new log file after rotation",
        )
        assert http("GET", svc.url + "/health")[0] == 200
    finally:
        svc.stop()
