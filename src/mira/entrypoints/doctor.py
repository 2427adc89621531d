"""`mira doctor config.json`: check each configured backend and integration, print a table."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from dependency_injector import providers

from mira.adapters.kubernetes_mount import subpath_mount_warning
from mira.adapters.memory_journal import InMemoryJournal
from mira.adapters.sqlite_journal import (
    JournalCorrupt,
    JournalUnavailable,
    check_place,
    open_reader,
)
from mira.domain.commands import ApplyConfig
from mira.domain.config.model import LoggingSettings
from mira.entrypoints.bootstrap import BootstrapError, bootstrap
from mira.service_layer.runtime import Runtime

Row = tuple[str, str, str]


def _row(name: str, check: Callable[[], str]) -> Row:
    try:
        return name, "ok", check()
    except Exception as exc:  # every failure is a row, never a traceback
        return name, "FAIL", f"{type(exc).__name__}: {exc}"


def doctor(path: str) -> int:
    """Print one row per check; 0 when all pass, 1 when one fails, 2 for an unusable config."""
    try:
        boot = bootstrap(path, configure_logs=False)
    except BootstrapError as exc:
        print(f"mira doctor: {exc}", file=sys.stderr)
        return 2
    # Errors only (the table says the rest), through the redacting sink.
    container, settings = boot.container, boot.settings
    logs = container.logging()
    logs.configure(LoggingSettings(level="ERROR", json_format=False))
    logs.lifecycle = False
    rows = [("config", "ok", f"{path} valid")]
    mount = subpath_mount_warning(path)
    rows.append(("config mount", "WARN" if mount else "ok", mount or "hot reload sees updates"))
    rows.append(_row(f"secrets:{settings.secrets.backend}", container.secrets_backend().check))
    rows.append(_row("journal", lambda: _journal(settings.journal.path)))
    # The references are read and put in use exactly as start-up does it, with the events
    # kept in memory: the doctor writes nothing into the service's journal.
    container.journal.override(providers.Object(InMemoryJournal(maxlen=1000)))
    runtime = container.runtime()
    command = container.reloader().command_for(boot.snapshot)
    rows.append(_row("secret references", lambda: _apply(runtime, command)))
    # Built only now, so that credentials given as secret:// references have their values.
    for name, check in _integration_checks(container).items():
        rows.append(_row(f"integration:{name}", check))
    _print(rows)
    _close(container)
    return 0 if all(r[1] in ("ok", "WARN") for r in rows) else 1


def _print(rows: list[Row]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, status, detail in rows:
        print(f"{name.ljust(width)}  {status.ljust(4)}  {detail}", flush=True)


def _apply(runtime: Runtime, command: ApplyConfig) -> str:
    if command.failures:
        raise RuntimeError(
            "; ".join(f"{', '.join(f.references) or f.name}: {f.reason}" for f in command.failures)
        )
    runtime.bus.handle(command)
    return f"{len(runtime.secrets.known_refs())} resolved"


def _journal(path: str | None) -> str:
    """journal.path checked as start-up would open it, read only: the doctor may run as
    another user than the service, so it creates, locks and moves nothing."""
    if path is None:
        return "in memory (journal.path null): events are not kept across restarts"
    degraded = "; the service would keep its events in memory only (journal degraded)"
    try:
        check_place(path)  # start-up's own checks of the directory
        if not os.path.exists(path):
            return f"{path}: not there yet, start-up creates it"
        conn = open_reader(path)
    except JournalCorrupt as exc:
        raise RuntimeError(f"{exc}; start-up moves it aside and starts a new one") from None
    except JournalUnavailable as exc:
        raise RuntimeError(f"{exc}{degraded}") from None
    try:
        (last,) = conn.execute("SELECT max(position) FROM events").fetchone()
    finally:
        conn.close()
    if not os.access(path, os.W_OK):
        raise RuntimeError(f"{path}: not writable by this user{degraded}")
    return f"{path}: events up to position {last or 0}"


def _integration_checks(container: Any) -> dict[str, Callable[[], str]]:
    provider = getattr(container, "integration_checks", None)
    if provider is None:
        return {}
    try:
        return dict(provider())
    except Exception as exc:  # building the clients failed: report it as a row
        return {"integrations": _raiser(exc)}


def _raiser(exc: Exception) -> Callable[[], str]:
    def check() -> str:
        raise exc

    return check


def _close(container: Any) -> None:
    """Release sessions and backend connections (best effort: the process ends next)."""
    closers: list[Callable[[], Any]] = [
        lambda: container.integrations().close(),
        lambda: container.secrets().stop(),
        container.shutdown_resources,
    ]
    for close in closers:
        try:
            close()
        except Exception as exc:
            print(f"mira doctor: cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)
