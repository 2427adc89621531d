"""Mira's deployment features in one runnable script (env secrets backend; no Vault or cluster).

Run: `python examples/deployment_features_example.py`. It writes a config into a temporary
directory, starts the service on a free port, and shows: structured JSON logs with correlation
IDs, a message through the API, hot reload with a callback (and a rejected bad edit), a secret
from the environment with its value masked, and a graceful shutdown.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mira.app import MiraApplication
from mira.utils.secrets_manager import get_secrets_manager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, body: Any = None, request_id: str | None = None) -> tuple[int, Any, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if request_id:
        req.add_header("X-Request-ID", request_id)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), resp.headers["X-Request-ID"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers["X-Request-ID"]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="mira-example-"))
    log_file = workdir / "logs" / "app.log"
    config = {
        "logging": {"level": "INFO", "json_format": True, "file": str(log_file)},
        "config": {"hot_reload": True, "poll_interval": 1},
        "secrets": {"backend": "env"},
        "integrations": {"github": {"token": "secret://github-credentials:token"}},
        "server": {"host": "127.0.0.1", "port": free_port()},
        "shutdown": {"drain_delay": 0, "timeout": 5},
    }
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    os.environ.setdefault("GITHUB_CREDENTIALS_TOKEN", "ghp_example_token_value")

    print("1. Start the service with hot reload and the env secrets backend")
    app = MiraApplication(str(config_path))
    changes: list[dict[str, Any]] = []
    if app.hot_reload_config:  # the guide's "Monitoring Changes"
        app.hot_reload_config.register_reload_callback(changes.append)
    app.start()
    base = f"http://127.0.0.1:{config['server']['port']}"
    print(f"   ready: {call(base + '/ready')[1]['status']} on {base}")

    print("2. A message through the API, with a correlation id")
    status, body, request_id = call(
        base + "/api/v1/messages",
        {
            "type": "generate_plan",
            "data": {
                "name": "Launch",
                "description": "Go live",
                "goals": ["MVP", "Beta"],
                "duration_weeks": 8,
                "start_date": "2026-01-05",
            },
        },
        request_id="example-42",
    )
    weeks = [m["week"] for m in body["data"]["milestones"]]
    print(f"   {status}, X-Request-ID {request_id}, milestones at weeks {weeks}")
    app.flush_logs()  # log lines are queued for up to 50 ms
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    tagged = [x for x in lines if x["correlation_id"] == "example-42"]
    print(f"   log lines with correlation_id=example-42: {[x['message'] for x in tagged]}")

    print("3. A secret from the environment: resolved, masked when printed")
    token = get_secrets_manager().get("secret://github-credentials:token")
    print(f"   integrations.github.token -> {token!r}")

    print("4. Hot reload: edit the file (atomic save), then a bad edit that is rejected")
    config["logging"]["level"] = "DEBUG"
    tmp = workdir / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, config_path)
    wait_for(lambda: changes)
    print(f"   callback saw logging.level = {changes[-1]['logging']['level'] if changes else '?'}")
    config_path.write_text('{"logging": {"level": "LOUD"}}')
    wait_for(lambda: call(base + "/ready")[1]["config"]["last_error"])
    ready = call(base + "/ready")[1]
    print(
        f"   still {ready['status']}, generation {ready['config']['generation']}, "
        f"last_error: {ready['config']['last_error']}"
    )

    print("5. Graceful shutdown (what SIGTERM does)")
    code = app.stop()
    print(f"   exit code {code}; log file: {log_file}")
    return 0 if code == 0 and status == 200 and changes else 1


if __name__ == "__main__":
    sys.exit(main())
