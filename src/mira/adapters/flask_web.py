"""The Flask app factory: health, readiness, metrics and the message API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from mira.adapters import json_body
from mira.adapters.openapi import openapi_document
from mira.adapters.prometheus_metrics import Metrics
from mira.adapters.structlog_logging import LogPipeline
from mira.adapters.wsgi_context import RequestContext
from mira.domain.messages import MessageError
from mira.domain.ports import StateView
from mira.domain.readiness import readiness
from mira.service_layer.messages import MessageHandlers

#: Extra /ready sections: name -> callable returning (ok, details)
ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]
log = structlog.get_logger("mira.app")
#: /ready says not ready when one command has held the bus this long (or the bus died)
BUS_STALL_SECONDS = 5.0


class _Request(Request):
    """Publishes the matched route template into the WSGI environ for the metrics middleware."""

    _rule: Rule | None = None

    @property
    def url_rule(self) -> Rule | None:
        return self._rule

    @url_rule.setter
    def url_rule(self, rule: Rule | None) -> None:
        self._rule = rule
        self.environ["mira.route"] = rule.rule if rule is not None else None


def create_app(
    bus: StateView,
    metrics: Metrics,
    handlers: MessageHandlers,
    logs: LogPipeline,
    max_body_bytes: int = 1048576,
    readiness_checks: dict[str, ReadinessCheck] | None = None,
    request_fields: Callable[[], dict[str, Any]] | None = None,
    render_metrics: Callable[[], bytes] | None = None,
) -> Flask:
    def json_response(body: Any, status: int = 200) -> Response:
        data = logs.redactor(json.dumps(body, default=str, separators=(",", ":")).encode())
        return Response(data, status=status, mimetype="application/json")

    def _error(status: int, message: str, **extra: Any) -> Response:
        cid = logs.current_correlation_id()
        body = {"status": "error", "error": message, "correlation_id": cid}
        return json_response({**body, **extra}, status)

    app = Flask("mira")
    app.request_class = _Request
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    checks = readiness_checks if readiness_checks is not None else {}

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "healthy"})

    @app.get("/ready")
    def ready() -> Response:
        ok, body = readiness(bus.state, time.time())
        stalled = bus.stalled(BUS_STALL_SECONDS)
        if stalled is not None:
            body.setdefault("reasons", []).append(stalled)
            ok = False
        for name, check in list(checks.items()):
            try:
                part_ok, details = check()
            except Exception as exc:  # a broken check reports, never crashes /ready
                part_ok, details = False, {"error": f"{type(exc).__name__}: {exc}"}
            body[name] = details
            if not part_ok:
                body.setdefault("reasons", []).append(f"{name} not ready")
                ok = False
        if not ok and body["status"] == "ready":
            body["status"] = "not_ready"
        return json_response(body, 200 if ok else 503)

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(
            (render_metrics or metrics.render)(),
            mimetype=metrics.content_type.split(";")[0],
            headers={"Content-Type": metrics.content_type},
        )

    @app.post("/api/v1/messages")
    def messages() -> Response:
        try:
            json_body.check_content_type(request.mimetype, request.mimetype_params.get("charset"))
            message = json_body.parse(request.get_data(cache=False))
        except json_body.BodyError as exc:
            return _error(exc.status, str(exc), field="body")
        try:
            result = handlers.process_message(message)
        except MessageError as exc:
            return _error(exc.status, str(exc), field=getattr(exc, "field", None))
        try:
            data = json_body.encode({"status": "success", "data": result})
        except json_body.BodyError as exc:
            return _error(exc.status, str(exc), field="body")
        return Response(logs.redactor(data), mimetype="application/json")

    @app.get("/openapi.json")
    def openapi() -> Response:
        return json_response(openapi_document(handlers))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            return _error(
                413, f"request body larger than server.max_body_bytes ({max_body_bytes} bytes)"
            )
        return _error(code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Response:
        log.exception("Unhandled error while handling request", path=request.path)
        return _error(500, "internal server error")

    app.wsgi_app = RequestContext(  # type: ignore[method-assign]
        app.wsgi_app, metrics, logs.write_line, request_fields
    )
    return app
