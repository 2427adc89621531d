"""The plans app's message handlers: `generate_plan` (pure) and `publish_plan` (GitHub/Jira)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from mira.domain.ports import MessageHandler
from mira.plans.domain import generate_plan, parse_plan_request


def plan_handler(today: Callable[[], dt.date]) -> MessageHandler:
    """The generate_plan handler; `today` supplies the default start date."""

    def handle(data: Mapping[str, Any]) -> dict[str, Any]:
        return generate_plan(parse_plan_request(data, today()))

    return handle


def publish_handler(publish: Callable[[], MessageHandler]) -> MessageHandler:
    """The publish_plan handler; `publish()` gives the live integrations' handler when called."""

    def handle(data: Mapping[str, Any]) -> Any:
        return publish()(data)

    return handle


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
