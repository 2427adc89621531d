"""/health, /ready and /metrics: the detailed view, and /ready's public one in general words."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response

from mira.adapters.prometheus_metrics import Metrics
from mira.domain.ports import StateView
from mira.domain.readiness import readiness
from mira.domain.state import SHUTTING_DOWN, Phase

#: Extra /ready sections: name -> callable returning (ok, details)
ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]
JsonResponse = Callable[..., Response]
#: /ready says not ready when one command has held the bus this long (or the bus died)
BUS_STALL_SECONDS = 5.0


def ready_report(
    bus: StateView, checks: dict[str, ReadinessCheck]
) -> tuple[bool, dict[str, Any], list[str]]:
    """(ready?, the detailed body, the reasons in general words for the public answer)."""
    state = bus.state
    ok, body = readiness(state, time.time())
    general: list[str] = []
    if state.phase is not Phase.READY:
        general.append("shutting down" if state.phase in SHUTTING_DOWN else state.phase.value)
    if any(r.startswith("secret ") for r in body.get("reasons", ())):
        general.append("a secret is not fresh")
    stalled = bus.stalled(BUS_STALL_SECONDS)
    if stalled is not None:
        body.setdefault("reasons", []).append(stalled)
        general.append("the runtime is not responding")
        ok = False
    for name, check in list(checks.items()):
        try:
            part_ok, details = check()
        except Exception as exc:  # a broken check reports, never crashes /ready
            part_ok, details = False, {"error": f"{type(exc).__name__}: {exc}"}
        body[name] = details
        if not part_ok:
            body.setdefault("reasons", []).append(f"{name} not ready")
            general.append("a dependency is not ready")
            ok = False
    if not ok and body["status"] == "ready":
        body["status"] = "not_ready"
    return ok, body, list(dict.fromkeys(general))


def add_probes(
    app: Flask,
    bus: StateView,
    metrics: Metrics,
    json_response: JsonResponse,
    checks: dict[str, ReadinessCheck],
    render_metrics: Callable[[], bytes] | None = None,
    public_ready: bool = False,
) -> None:
    """All three with the detail (`public_ready`: only /ready, in general words)."""

    @app.get("/ready")
    def ready() -> Response:
        ok, body, general = ready_report(bus, checks)
        if public_ready:  # no generation, secret names, versions, paths or error texts
            body = {"status": body["status"], **({} if ok else {"reasons": general})}
        return json_response(body, 200 if ok else 503)

    if public_ready:
        return

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "healthy"})

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(
            (render_metrics or metrics.render)(),
            mimetype=metrics.content_type.split(";")[0],
            headers={"Content-Type": metrics.content_type},
        )
