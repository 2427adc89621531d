"""The message API: a registry of handlers by message type, extended through the container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from mira.domain.messages import InvalidMessage, UnknownMessageType
from mira.domain.ports import MessageHandler

log = structlog.get_logger("mira.app")


class MessageHandlers:
    """Maps a message `type` to a handler `handler(data) -> result`."""

    def __init__(self) -> None:
        self._handlers: dict[str, MessageHandler] = {}
        self._schemas: dict[str, Mapping[str, Any]] = {}

    def register(
        self,
        message_type: str,
        handler: MessageHandler,
        schema: Mapping[str, Any] | None = None,
    ) -> None:
        """Add `handler`; `schema` (JSON Schema of its `data`) goes into /openapi.json."""
        self._handlers[message_type] = handler
        self._schemas[message_type] = schema or {"type": "object"}

    def schemas(self) -> dict[str, Mapping[str, Any]]:
        """Each message type's `data` schema, by type."""
        return dict(sorted(self._schemas.items()))

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def process_message(self, message: Any) -> Any:
        """Validate the envelope, log it, and run its handler."""
        if not isinstance(message, Mapping):
            raise InvalidMessage("body", "must be a JSON object with 'type' and 'data'")
        message_type = message.get("type")
        if not isinstance(message_type, str) or not message_type:
            raise InvalidMessage("type", f"is required; supported types: {', '.join(self.types())}")
        handler = self._handlers.get(message_type)
        if handler is None:
            raise UnknownMessageType(message_type, self.types())
        data = message.get("data")
        if not isinstance(data, Mapping):
            raise InvalidMessage("data", "is required and must be an object")
        log.info("Processing message", message_type=message_type)
        return handler(data)
