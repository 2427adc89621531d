"""What an applied, rejected or restart-only configuration change does (bus handlers)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from mira.domain import events as ev
from mira.domain.config.model import LoggingSettings
from mira.domain.config.secret_refs import find_refs
from mira.domain.state import RuntimeState
from mira.service_layer.config_reload import ConfigReloader

log = structlog.get_logger("mira.config")


def _touches(keys: tuple[str, ...], area: str) -> bool:
    return any(k.startswith(area + ".") for k in keys)


def _try(area: str, apply: Callable[[], None]) -> bool:
    try:
        apply()
    except Exception:
        log.exception("Could not apply the new configuration", area=area, lifecycle=True)
        return False
    return True


class ConfigEffects:
    def __init__(
        self,
        reloader: ConfigReloader,
        apply_logging: Callable[[LoggingSettings], None],
        state: Callable[[], RuntimeState],
    ) -> None:
        self._reloader = reloader
        self._apply_logging = apply_logging
        self._state = state
        #: with workers: was this generation committed to all of them?
        self.committed: Callable[[int], bool] = lambda generation: True

    def _generation(self) -> int:
        return self._state().config_generation

    def on_changed(self, event: ev.ConfigChanged) -> None:
        """Apply each changed area on its own: one failing effect stops neither the others,
        nor the success line, nor the subscribers."""
        changed, settings = event.changed_keys, event.settings
        if not self.committed(event.generation):
            return  # the workers refused it: rolled back, nothing applied
        if event.restart_required:
            self._restart_warning(event.restart_required, event.generation)
        applied = tuple(k for k in changed if k not in event.restart_required)
        effects: list[tuple[str, Callable[[], None]]] = [
            ("logging", lambda: self._apply_logging(settings.logging)),
            ("config", lambda: self._reloader.reconfigure(settings.config)),
        ]
        failed = [a for a, apply in effects if _touches(applied, a) and not _try(a, apply)]
        log.info(
            "Configuration reloaded successfully",
            changed_keys=list(applied),
            generation=event.generation,
            source=event.source,
            lifecycle=True,
            **({"failed_effects": failed} if failed else {}),
        )
        self._reloader.subscriptions.notify(applied, settings)

    def on_needs_restart(self, event: ev.ConfigNeedsRestart) -> None:
        self._restart_warning(event.restart_required, self._generation())

    @staticmethod
    def _restart_warning(keys: tuple[str, ...], generation: int) -> None:
        log.warning(
            "Configuration change needs a restart; not applied (restart required)",
            restart_required=list(keys),
            generation=generation,
        )

    def on_rejected(self, event: ev.ConfigRejected) -> None:
        log.error(
            "Configuration rejected; keeping the last good configuration",
            source=event.source,
            reasons=list(event.reasons),
            generation=self._generation(),
        )

    def on_secret_rotated(self, event: ev.SecretRotated) -> None:
        """Re-deliver the config values that reference the secret (the config is unchanged, so
        whole-config callbacks are not called)."""
        live = self._state().settings
        if live is None:
            return
        keys = tuple(sorted(k for k, ref in find_refs(live).items() if ref.path == event.secret))
        if keys:
            log.info(
                "Secret rotated; re-resolved configuration values",
                secret=event.secret,
                changed_keys=list(keys),
                lifecycle=True,
            )
            self._reloader.subscriptions.notify(keys, live, whole=False)
