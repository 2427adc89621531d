"""WSGI apps the engine benchmarks host: bare Flask (same two endpoints) and Mira's own app.

`apps:bare` is plain Flask serving GET /health and POST /api/v1/messages generate_plan with
Mira's own pure plan function, so the work per request is the same as in the service.
`apps:mira` is `Container().web_app()` built from the config file in MIRA_BENCH_CONFIG, to
host Mira's request path (correlation id, JSON access line, metrics) on another engine.
`apps:busy` and `apps:alloc` are bare with a fixed amount of extra Python per request before
Flask (a spin on the clock for MIRA_BENCH_BUSY_US microseconds; building, dumping and parsing
a dict of MIRA_BENCH_ALLOC_N entries), for benchmarks/python_cost.py.
`apps:slow` adds GET /slow?s=SECONDS to bare, for the drain spikes; `apps:slow_own_group`
is the same, loaded after moving the worker into its own process group (os.setpgid), so a
SIGTERM to the supervisor's group does not reach the worker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from typing import Any

from flask import Flask, Response, request

from mira.domain.messages import MessageError
from mira.plans.domain import generate_plan, parse_plan_request


def _json(body: Any, status: int = 200) -> Response:
    data = json.dumps(body, default=str, separators=(",", ":")).encode()
    return Response(data, status=status, mimetype="application/json")


def create_bare() -> Flask:
    app = Flask("bare")

    @app.get("/health")
    def health() -> Response:
        return _json({"status": "healthy"})

    @app.post("/api/v1/messages")
    def messages() -> Response:
        message = request.get_json(force=True)
        if message.get("type") != "generate_plan":
            return _json({"status": "error", "error": "unknown message type"}, 400)
        try:
            plan = generate_plan(parse_plan_request(message.get("data"), dt.date.today()))
        except MessageError as exc:
            return _json({"status": "error", "error": str(exc)}, exc.status)
        return _json({"status": "success", "data": plan})

    @app.get("/slow")
    def slow() -> Response:
        time.sleep(min(float(request.args.get("s", "1")), 30.0))
        return _json({"status": "slept"})

    return app


def spin(microseconds: float) -> None:
    """Python that touches almost no memory: a loop on the clock."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def churn(entries: int) -> int:
    """Python that allocates like a request path does: a dict of lists and dicts, to JSON and
    back."""
    value = {f"k{i}": [i, str(i), {"x": i}] for i in range(entries)}
    return len(json.loads(json.dumps(value)))


class Extra:
    """A WSGI app that does `work()` before the app it wraps."""

    def __init__(self, app: Any, work: Any) -> None:
        self.app, self.work = app, work

    def __call__(self, environ: Any, start_response: Any) -> Any:
        self.work()
        return self.app(environ, start_response)


def _mira() -> Any:
    from mira.entrypoints.bootstrap import bootstrap

    boot = bootstrap(os.environ["MIRA_BENCH_CONFIG"])
    return boot.container.web_app()


def __getattr__(name: str) -> Any:  # built on first use, so importing builds nothing
    if name in ("bare", "slow"):
        app = create_bare()
    elif name == "slow_own_group":
        os.setpgid(0, 0)
        app = create_bare()
    elif name == "mira":
        app = _mira()
    elif name == "busy":
        us = float(os.environ.get("MIRA_BENCH_BUSY_US", "24"))
        app = Extra(create_bare(), lambda: spin(us))
    elif name == "alloc":
        entries = int(os.environ.get("MIRA_BENCH_ALLOC_N", "20"))
        app = Extra(create_bare(), lambda: churn(entries))
    else:
        raise AttributeError(name)
    globals()[name] = app
    return app
