"""The Flask app on server.port: the message API (and the probes without a management port)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import structlog
from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from mira.adapters import json_body
from mira.adapters.bearer_auth import HEADER, BearerTokens
from mira.adapters.openapi import openapi_document
from mira.adapters.probe_views import ReadinessCheck, add_probes
from mira.adapters.prometheus_metrics import Metrics
from mira.adapters.request_limits import RequestRejected, check_request, read_body
from mira.adapters.structlog_logging import LogPipeline
from mira.adapters.web_json import JsonResponses
from mira.adapters.wsgi_context import RequestContext
from mira.domain.messages import MessageError
from mira.domain.ports import StateView
from mira.service_layer.messages import MessageHandlers

log = structlog.get_logger("mira.app")
Probes = Literal["detailed", "public", "none"]


class RouteRequest(Request):
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
    max_header_bytes: int = 65536,
    readiness_checks: dict[str, ReadinessCheck] | None = None,
    request_fields: Callable[[], dict[str, Any]] | None = None,
    render_metrics: Callable[[], bytes] | None = None,
    probes: Probes = "detailed",
    api_tokens: BearerTokens | None = None,
) -> Flask:
    """The app on server.port. `probes`: "detailed" (no management listener), "public" (only
    /ready, in general words) or "none" (they are on the management listener)."""
    responses = JsonResponses(logs)
    json_response, _error = responses.ok, responses.error

    app = Flask("mira")
    app.request_class = RouteRequest
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    checks = readiness_checks if readiness_checks is not None else {}
    if probes != "none":
        public = probes == "public"
        add_probes(app, bus, metrics, json_response, checks, render_metrics, public_ready=public)

    @app.before_request
    def limits() -> None:
        check_request(request.environ, max_header_bytes)

    @app.errorhandler(RequestRejected)
    def rejected(exc: RequestRejected) -> Response:
        response = _error(exc.status, str(exc))
        response.headers["Connection"] = "close"  # what is left of it is not read
        return response

    @app.post("/api/v1/messages")
    def messages() -> Response:
        if api_tokens is not None and api_tokens.configured:
            problem = api_tokens.problem(request.headers.get(HEADER))
            if problem is not None:
                return responses.unauthorized(problem)
        try:
            json_body.check_content_type(request.mimetype, request.mimetype_params.get("charset"))
            body = read_body(request.stream, max_body_bytes, request.content_length)
            message = json_body.parse(body)
        except json_body.BodyError as exc:
            return _error(exc.status, str(exc), field="body")
        try:
            result = handlers.process_message(message)
        except MessageError as exc:
            if exc.public() != str(exc):  # the detail is for the log, not for the caller
                log.warning("Message failed", status=exc.status, error=str(exc))
            return _error(exc.status, exc.public(), field=getattr(exc, "field", None))
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
        response = _error(code, exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() == "allow":  # a 405 says which methods the path takes
                response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Response:
        log.exception("Unhandled error while handling request", path=request.path)
        return _error(500, "internal server error")

    app.wsgi_app = RequestContext(  # type: ignore[method-assign]
        app.wsgi_app, metrics, logs, request_fields
    )
    return app
