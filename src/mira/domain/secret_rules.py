"""Which secret reads become the values in use: newest read wins, only live references count."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from mira.domain import events as ev
from mira.domain.commands import SecretFailure, SecretFetch
from mira.domain.config.model import Settings
from mira.domain.config.secret_refs import find_refs
from mira.domain.lifecycle import Meta
from mira.domain.state import RuntimeState


def referenced(settings: Settings | None) -> frozenset[str]:
    """The secret names (paths) a configuration references."""
    if settings is None:
        return frozenset()
    return frozenset(ref.path for ref in find_refs(settings).values())


def _discard(fetch: SecretFetch, reason: str, meta: Meta) -> ev.SecretFetchDiscarded:
    return ev.SecretFetchDiscarded(secret=fetch.name, seq=fetch.seq, reason=reason, **meta)


def discard_all(
    fetches: Iterable[SecretFetch], reason: str, meta: Meta
) -> list[ev.SecretFetchDiscarded]:
    return [_discard(f, reason, meta) for f in fetches]


def fetched(
    f: SecretFetch, backend: str, state: RuntimeState, meta: Meta, names: frozenset[str]
) -> list[ev.Event]:
    """A read finished: promote it unless a newer read is in use or nothing references it."""
    if f.name not in names:
        return [_discard(f, "the live configuration does not reference it", meta)]
    known = state.secrets.get(f.name)
    if known is not None and f.seq <= known.seq:
        return [_discard(f, f"a newer read (#{known.seq}) is already in use", meta)]
    if known is None or known.fingerprint is None:
        return [ev.SecretLoaded(**_promoted(f, backend), **meta)]
    if known.fingerprint == f.fingerprint:
        # The same value again: record its freshness (and a recovery after failures).
        return [ev.SecretRefreshed(**_promoted(f, backend), **meta)]
    return [
        ev.SecretRotated(previous_fingerprint=known.fingerprint, **_promoted(f, backend), **meta)
    ]


class _Promoted(TypedDict):
    secret: str
    fingerprint: str
    version: str | None
    backend: str
    seq: int


def _promoted(f: SecretFetch, backend: str) -> _Promoted:
    return {
        "secret": f.name,
        "fingerprint": f.fingerprint,
        "version": f.version,
        "backend": backend,
        "seq": f.seq,
    }


def fetched_all(
    fetches: Iterable[SecretFetch],
    backend: str,
    state: RuntimeState,
    meta: Meta,
    names: frozenset[str],
) -> list[ev.Event]:
    return [e for f in fetches for e in fetched(f, backend, state, meta, names)]


def failed(
    f: SecretFailure, backend: str, state: RuntimeState, meta: Meta, names: frozenset[str]
) -> list[ev.Event]:
    """A read failed: the cached value stays in use; only live references are tracked."""
    known = state.secrets.get(f.name)
    if f.name not in names or (known is not None and f.seq <= known.seq):
        return []
    failures = known.failures + 1 if known is not None else 1
    return [
        ev.SecretRefreshFailed(
            secret=f.name,
            reason=f.reason,
            consecutive_failures=failures,
            backend=backend,
            seq=f.seq,
            **meta,
        )
    ]
