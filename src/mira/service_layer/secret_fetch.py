"""Reading secrets from the backend on any thread: values are staged, never installed here."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from mira.domain.commands import SecretFailure, SecretFetch
from mira.domain.config.secret_refs import SecretRef
from mira.domain.ports import SecretsBackend, SecretsError
from mira.domain.secret_value import SecretValue, fingerprint
from mira.domain.state import SecretStatus

log = structlog.get_logger("mira.secrets")


@dataclass
class FetchOutcome:
    fetched: list[SecretFetch] = field(default_factory=list)
    failed: list[SecretFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class SecretStaging:
    """Values read but not yet in use, by the sequence number of their read."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._staged: dict[int, dict[SecretRef, SecretValue]] = {}
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def stage(self, seq: int, values: dict[SecretRef, SecretValue]) -> None:
        with self._lock:
            self._staged[seq] = values

    def take(self, seq: int) -> dict[SecretRef, SecretValue] | None:
        with self._lock:
            return self._staged.pop(seq, None)

    def __len__(self) -> int:
        return len(self._staged)


class SecretFetcher:
    """Reads each secret (all its referenced keys together), stages the values under the
    read's sequence number and describes the read; the bus decides whether it is used."""

    def __init__(
        self,
        backend: SecretsBackend,
        staging: SecretStaging,
        on_fetch: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.backend = backend
        self.staging = staging
        self._on_fetch = on_fetch or (lambda backend, ok: None)

    def fetch(self, refs: Iterable[SecretRef], known: Mapping[str, SecretStatus]) -> FetchOutcome:
        by_name: dict[str, list[SecretRef]] = defaultdict(list)
        for ref in sorted(set(refs)):
            by_name[ref.path].append(ref)
        outcome = FetchOutcome()
        for name, group in by_name.items():
            seq = self.staging.next_seq()
            try:
                values = {ref: self._read(ref) for ref in group}
            except Exception as exc:  # any backend failure keeps the cached value
                reason = _safe_reason(exc)
                refs_text = tuple(str(r) for r in group)
                outcome.failed.append(SecretFailure(name, reason, seq, refs_text))
                log.warning(
                    "Secret fetch failed",
                    secret=name,
                    reference=", ".join(refs_text),
                    backend=self.backend.name,
                    reason=reason,
                )
                continue
            digest = fingerprint((str(r.key), v.reveal()) for r, v in values.items())
            status = known.get(name)
            # A version lookup costs a backend call: only when the value changed.
            if status is not None and status.fingerprint == digest:
                version = status.version
            else:
                version = self._version(name)
            self.staging.stage(seq, values)
            outcome.fetched.append(SecretFetch(name, digest, version, seq))
        return outcome

    def _read(self, ref: SecretRef) -> SecretValue:
        try:
            value = SecretValue(as_text(ref, self.backend.get_secret(ref.path, ref.key)))
        except Exception:
            self._on_fetch(self.backend.name, False)
            raise
        self._on_fetch(self.backend.name, True)
        return value

    def _version(self, name: str) -> str | None:
        try:
            return self.backend.get_secret_version(name)
        except Exception:
            return None


def as_text(ref: SecretRef, raw: Any) -> str:
    """A backend's answer as the one string a config value needs; errors say what came back."""
    if isinstance(raw, str):
        return raw
    if raw is None:
        raise SecretsError("the backend returned None instead of a value")
    if isinstance(raw, bytes):
        return raw.decode("utf-8")
    if isinstance(raw, Mapping):
        if ref.key is not None:
            if ref.key in raw and raw[ref.key] is not None:
                return as_text(SecretRef(ref.path), raw[ref.key])
            raise SecretsError(
                f"the backend returned an object without key {ref.key!r} "
                f"(keys: {', '.join(sorted(map(str, raw)))})"
            )
        if len(raw) == 1:
            return as_text(ref, next(iter(raw.values())))
        if "value" in raw:
            return as_text(ref, raw["value"])
        raise SecretsError(f"the secret has several keys; name one as secret://{ref.path}:KEY")
    if isinstance(raw, bool | int | float):
        return str(raw)
    raise SecretsError(f"the backend returned a {type(raw).__name__}, not a string")


def _safe_reason(exc: Exception) -> str:
    """Why a fetch failed, without the reference (callers name it); never a value.

    Backends' own errors (SecretsError) carry readable messages; anything else gets its type.
    """
    text = str(exc)
    if isinstance(exc, SecretsError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
