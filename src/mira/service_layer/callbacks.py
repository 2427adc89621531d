"""Calling code the runtime does not own (embedding apps' callbacks): isolated and logged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("mira.callbacks")


def name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", repr(fn)))


def call_isolated(callback: Callable[[Any], Any], arg: Any, failed: str, **fields: Any) -> None:
    """`callback(arg)`; an exception is logged as `failed` (with the callback's name and
    `fields`) and goes no further: one broken callback stops neither the others nor the bus."""
    try:
        callback(arg)
    except Exception:
        log.exception(failed, callback=name_of(callback), **fields)
