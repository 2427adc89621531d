"""The OpenAPI 3.0 document at /openapi.json: the runtime's endpoints and each message type."""

from __future__ import annotations

from typing import Any

from mira import __version__ as _version
from mira.adapters.json_body import EXPECTED_TYPE, MAX_RESPONSE_BYTES
from mira.service_layer.messages import MessageHandlers

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {"type": "string"},
        "field": {"type": "string", "nullable": True},
        "correlation_id": {"type": "string", "nullable": True},
    },
}
_ERRORS = {
    "400": "Malformed JSON, or a missing, mistyped or out-of-range field (named in `field`)",
    "409": "An integration the message needs is disabled or misconfigured",
    "413": "The body is larger than server.max_body_bytes",
    "415": f"The body is not {EXPECTED_TYPE} in UTF-8",
    "502": "An upstream service (GitHub, Jira) failed after retries",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {EXPECTED_TYPE: {"schema": schema}}}


def _message(message_type: str, data: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "data"],
        "properties": {"type": {"type": "string", "enum": [message_type]}, "data": data},
    }


def _messages(handlers: MessageHandlers) -> dict[str, Any]:
    schemas = handlers.schemas()
    success = {
        "type": "object",
        "required": ["status", "data"],
        "properties": {"status": {"type": "string", "enum": ["success"]}, "data": {}},
    }
    responses = {"200": _json(success, f"The handler's result (at most {MAX_RESPONSE_BYTES} B)")}
    responses.update({code: _json(ERROR_SCHEMA, text) for code, text in _ERRORS.items()})
    body = {"oneOf": [_message(t, s) for t, s in schemas.items()]} if schemas else _message("", {})
    return {
        "post": {
            "operationId": "process_message",
            "summary": f"Run a message; types: {', '.join(schemas)}",
            "requestBody": {"required": True, "content": {EXPECTED_TYPE: {"schema": body}}},
            "responses": responses,
        }
    }


def _get(operation: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": operation, "responses": responses}}


def openapi_document(handlers: MessageHandlers) -> dict[str, Any]:
    """The document for this service, with the message types registered right now."""
    ready = {
        "200": _json(_STATUS_SCHEMA, "Ready"),
        "503": _json(_STATUS_SCHEMA, "Starting, draining or not ready (reasons listed)"),
    }
    metrics = {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}}
    document = {"description": "This document", "content": {EXPECTED_TYPE: {}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Mira", "version": _version},
        "paths": {
            "/health": _get("health", {"200": _json(_STATUS_SCHEMA, "The process runs")}),
            "/ready": _get("ready", ready),
            "/metrics": _get("metrics", metrics),
            "/openapi.json": _get("openapi", {"200": document}),
            "/api/v1/messages": _messages(handlers),
        },
    }
