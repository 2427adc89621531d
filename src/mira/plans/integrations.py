"""GitHub and Jira clients built from the resolved config, swapped atomically on rotation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

import structlog

from mira.domain.config.model import Settings
from mira.domain.messages import MessageError
from mira.domain.secret_value import SecretValue
from mira.plans.ports import IntegrationUnavailable
from mira.plans.publish import publish_plan

log = structlog.get_logger("mira.integrations")
NAMES = ("github", "jira")
Resolve = Callable[[str | None], SecretValue | None]
Observe = Callable[[str, str, float], None]
#: builder(settings, resolve, observe) -> client, raising IntegrationUnavailable when unusable
Builder = Callable[[Settings, Resolve, Observe], Any]
C = TypeVar("C")


class ClientHolder(Generic[C]):
    """Holds the live client; readers never lock, a swap leaves calls in flight on the old one."""

    __slots__ = ("_client", "_lock")

    def __init__(self, client: C) -> None:
        self._client = client
        self._lock = threading.Lock()

    def current(self) -> C:
        return self._client

    def swap(self, new: C) -> C:
        """Install `new`; return the previous client (close it, it waits for its calls)."""
        with self._lock:
            old, self._client = self._client, new
        return old


Slot = ClientHolder[Any] | IntegrationUnavailable | None


class Integrations:
    """Holds one ClientHolder (or the reason it is unavailable) per integration."""

    def __init__(
        self,
        builders: Mapping[str, Builder],
        resolve: Resolve,
        settings: Callable[[], Settings | None],
        make_plan: Callable[..., Any],
        observe: Observe | None = None,
    ) -> None:
        self._builders = dict(builders)
        self._resolve = resolve
        self._settings = settings
        self._make_plan = make_plan
        self._observe_metrics = observe
        self._holders: dict[str, Slot] = {}
        self._inputs: dict[str, Hashable] = {}  # what each live client was built from
        self._last: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def configure(self, settings: Settings | None = None) -> None:
        """(Re)build clients whose settings or credentials changed; calls in flight finish."""
        settings = settings or self._settings()
        if settings is None:
            return
        with self._lock:
            for name in self._builders:
                try:
                    self._configure_one(name, settings)
                except Exception:  # one broken builder must not leave the others stale
                    log.exception("Integration client build failed", integration=name)
                    self._replace(name, IntegrationUnavailable(name, "client build failed"))

    def _configure_one(self, name: str, settings: Settings) -> None:
        section = getattr(settings.integrations, name)
        if not section.enabled:
            self._replace(name, None)
            return
        used: list[str] = []
        try:
            client = self._builders[name](settings, self._resolver(name, used), self._record)
        except IntegrationUnavailable as exc:
            self._replace(name, exc)
            log.warning("Integration not configured", integration=name, reason=exc.reason)
            return
        inputs = (section, tuple(used))
        holder = self._holders.get(name)
        if isinstance(holder, ClientHolder) and self._inputs.get(name) == inputs:
            _close(client)  # nothing it depends on changed: keep the warm client
            return
        self._inputs[name] = inputs
        if isinstance(holder, ClientHolder):
            _close(holder.swap(client))
            log.info("Integration client rebuilt with current credentials", integration=name)
        else:
            self._holders[name] = ClientHolder(client)
            log.info("Integration client ready", integration=name)

    def _resolver(self, name: str, used: list[str]) -> Resolve:
        """`resolve` that names an unresolved secret:// reference and notes fingerprints."""

        def resolve(text: str | None) -> SecretValue | None:
            value = self._resolve(text)
            if value is None and text is not None and text.startswith("secret://"):
                raise IntegrationUnavailable(
                    name,
                    f"integrations.{name}: {text} could not be resolved by the secrets backend",
                )
            used.append(value.fingerprint() if isinstance(value, SecretValue) else "")
            return value

        return resolve

    def _replace(self, name: str, value: IntegrationUnavailable | None) -> None:
        old = self._holders.get(name)
        self._holders[name] = value
        self._inputs.pop(name, None)
        if isinstance(old, ClientHolder):
            _close(old.current())

    def on_change(self, _new_value: Any) -> None:
        """Config subscription for `integrations` (also fired when a referenced secret rotates)."""
        self.configure()

    def _record(self, integration: str, result: str, seconds: float) -> None:
        entry = self._last.setdefault(integration, {})
        entry["last_call"] = result
        entry["last_call_at"] = round(time.time(), 3)
        if self._observe_metrics is not None:
            self._observe_metrics(integration, result, seconds)

    def publish(self, data: Mapping[str, Any]) -> Any:
        """The `publish_plan` message handler."""
        target = data.get("target") if isinstance(data, Mapping) else None
        try:
            result = publish_plan(
                data,
                github=self._holders.get("github"),
                jira=self._holders.get("jira"),
                make_plan=self._make_plan,
            )
        except MessageError as exc:
            if target in NAMES and exc.status >= 500:  # the remote side failed, not the request
                self._last.setdefault(str(target), {})["last_error"] = str(exc)
            raise
        if target in NAMES:
            self._last.setdefault(str(target), {}).pop("last_error", None)
        return result

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Each enabled integration: configured or why not, last call ok or its error."""
        out: dict[str, Any] = {}
        for name, holder in list(self._holders.items()):
            if holder is None:
                continue
            entry: dict[str, Any] = {"configured": isinstance(holder, ClientHolder)}
            if isinstance(holder, IntegrationUnavailable):
                entry["reason"] = holder.reason
            entry.update(self._last.get(name, {}))
            out[name] = entry
        return True, out

    def checks(self) -> dict[str, Callable[[], str]]:
        """For `mira doctor`: one credential check per enabled integration."""
        checks: dict[str, Callable[[], str]] = {}
        for name, holder in list(self._holders.items()):
            if isinstance(holder, ClientHolder):
                checks[name] = holder.current().check
            elif isinstance(holder, IntegrationUnavailable):
                checks[name] = _raiser(holder)
        return checks

    def close(self) -> None:
        with self._lock:
            for name in list(self._holders):
                self._replace(name, None)


def _raiser(exc: Exception) -> Callable[[], str]:
    def check() -> str:
        raise exc

    return check


def _close(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        close()
