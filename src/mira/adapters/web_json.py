"""JSON responses and errors, redacted, shared by the API app and the management app."""

from __future__ import annotations

from typing import Any

from flask import Response

from mira.adapters import json_body
from mira.adapters.structlog_logging import LogPipeline


def error_payload(message: str, correlation_id: str) -> dict[str, Any]:
    """The body of every error Mira answers, wherever it is answered from."""
    return {"status": "error", "error": message, "correlation_id": correlation_id}


class JsonResponses:
    """`ok(body, status)` and `error(status, message, **extra)`; secret values masked."""

    def __init__(self, logs: LogPipeline) -> None:
        self._logs = logs

    def ok(self, body: Any, status: int = 200) -> Response:
        data = self._logs.redactor(json_body.dumps(body))
        return Response(data, status=status, mimetype="application/json")

    def error(self, status: int, message: str, **extra: Any) -> Response:
        cid = self._logs.current_correlation_id()
        return self.ok({**error_payload(message, cid), **extra}, status)

    def unauthorized(self, problem: str) -> Response:
        response = self.error(401, problem, field="Authorization")
        response.headers["WWW-Authenticate"] = 'Bearer realm="mira"'
        return response
