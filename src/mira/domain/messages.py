"""Errors of the message API, shared by the domain and the registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MessageError(Exception):
    """A message the API refuses; `status` is the HTTP status to answer with."""

    status = 400

    def public(self) -> str:
        """What the caller is told (the log keeps `str(self)`, which may say more)."""
        return str(self)


class InvalidMessage(MessageError):
    """A field is missing, mistyped or out of range."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownMessageType(MessageError):
    field = "type"

    def __init__(self, given: object, supported: list[str]) -> None:
        shown = given[:40] + "..." if isinstance(given, str) and len(given) > 40 else given
        super().__init__(
            f"type: unsupported message type {shown!r}; supported types: {', '.join(supported)}"
        )
        self.supported = supported


def require(data: Mapping[str, Any], field: str, kind: type, prefix: str = "data") -> Any:
    """The field's value, or InvalidMessage naming it when missing or of the wrong type."""
    where = f"{prefix}.{field}" if prefix else field
    if field not in data or data[field] is None:
        raise InvalidMessage(where, "is required")
    value = data[field]
    if kind is int and isinstance(value, bool):
        raise InvalidMessage(where, "must be an integer")
    if not isinstance(value, kind):
        names = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
        raise InvalidMessage(where, f"must be {names.get(kind, kind.__name__)}")
    return value
