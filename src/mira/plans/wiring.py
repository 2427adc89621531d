"""Installs the plans app on a Mira runtime: its messages, integrations, readiness and shutdown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from mira.domain.config.model import Settings
from mira.plans import schema
from mira.plans.github import GithubClient
from mira.plans.handlers import plan_handler, publish_handler, utc_today
from mira.plans.integrations import Integrations, Observe, Resolve
from mira.plans.jira import JiraClient
from mira.service_layer.messages import MessageHandlers
from mira.service_layer.shutdown import ORDER_INTEGRATIONS

ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]


class Subscriptions(Protocol):
    def subscribe(self, key: str, callback: Callable[[Any], Any]) -> Any: ...


class Hooks(Protocol):
    def add(self, name: str, fn: Callable[[], Any], order: int = ...) -> Any: ...


def build_github(settings: Settings, resolve: Resolve, observe: Observe) -> GithubClient:
    github = settings.integrations.github
    return GithubClient(github, resolve(github.token), observe=observe)


def build_jira(settings: Settings, resolve: Resolve, observe: Observe) -> JiraClient:
    jira = settings.integrations.jira
    return JiraClient(jira, resolve(jira.username), resolve(jira.api_token), observe=observe)


def plan_messages(
    handlers: MessageHandlers,
    integrations: Callable[[], Integrations],
    today: Callable[[], dt.date] = utc_today,
) -> MessageHandlers:
    """Register generate_plan and publish_plan; the integrations are built on first publish."""
    handlers.register("generate_plan", plan_handler(today), schema.GENERATE_PLAN)
    publish = publish_handler(lambda: integrations().publish)
    handlers.register("publish_plan", publish, schema.PUBLISH_PLAN)
    return handlers


def plan_integrations(
    resolve: Resolve,
    settings: Callable[[], Settings | None],
    observe: Observe,
    subscriptions: Subscriptions,
    hooks: Hooks,
    readiness_checks: dict[str, ReadinessCheck],
    today: Callable[[], dt.date] = utc_today,
) -> Integrations:
    """The GitHub/Jira clients, rebuilt on `integrations` changes, in /ready, closed at shutdown."""
    builders = {"github": build_github, "jira": build_jira}
    integrations = Integrations(builders, resolve, settings, plan_handler(today), observe)
    subscriptions.subscribe("integrations", integrations.on_change)
    hooks.add("integrations", integrations.close, order=ORDER_INTEGRATIONS)
    readiness_checks["integrations"] = integrations.readiness
    return integrations


def doctor_checks(integrations: Integrations, settings: Settings) -> dict[str, Callable[[], str]]:
    """For `mira doctor`: build the clients from `settings`, one credential check each."""
    integrations.configure(settings)
    return integrations.checks()
