"""With N workers: every decided change is committed to all of them, or to none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

from mira.domain import events as ev
from mira.domain.commands import RecordRolloutFailed
from mira.domain.ports import Clock, IdGenerator
from mira.domain.state import RuntimeState
from mira.service_layer.secret_cache import SecretCache
from mira.service_layer.snapshots import Snapshot, build_snapshot, snapshot_key

log = structlog.get_logger("mira.supervisor")


class Workers(Protocol):
    def rollout(self, snapshot: Snapshot) -> str | None: ...


class Rollout:
    """Bus handler (after the secrets are promoted, before the config effects): builds the
    snapshot of what was decided and has the workers prepare and commit it."""

    def __init__(
        self,
        workers: Workers,
        cache: SecretCache,
        state: Callable[[], RuntimeState],
        submit: Callable[[Any], Any],
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self._workers = workers
        self._cache = cache
        self._state = state
        self._submit = submit
        self._clock = clock
        self._ids = ids
        self._key: tuple[Any, ...] | None = None
        self._failed: set[int] = set()

    def snapshot(self) -> Snapshot:
        return build_snapshot(self._state(), self._cache)

    def on_event(self, event: ev.Event) -> None:
        state = self._state()
        key = snapshot_key(state, self._cache)
        if key == self._key:
            return
        reason = self._workers.rollout(build_snapshot(state, self._cache))
        if reason is None:
            self._key = key
            return
        log.error(
            "Workers did not take the change; every worker stays on the last one",
            reason=reason,
            generation=state.config_generation,
            lifecycle=True,
        )
        if isinstance(event, ev.ConfigChanged):
            self._failed.add(event.generation)
            self._submit(
                RecordRolloutFailed(
                    correlation_id=event.correlation_id,
                    at=self._clock.now(),
                    generation=event.generation,
                    reason=f"not applied: {reason}",
                )
            )

    def committed(self, generation: int) -> bool:
        """False for a generation the workers refused (its success line is not logged)."""
        return generation not in self._failed
