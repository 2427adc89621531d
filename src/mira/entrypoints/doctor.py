"""`mira doctor config.json`: check each configured backend and integration, print a table."""

from __future__ import annotations

import sys
from collections.abc import Callable

from mira.entrypoints.bootstrap import BootstrapError, bootstrap

Check = tuple[str, Callable[[], str]]


def _row(name: str, check: Callable[[], str]) -> tuple[str, str, str]:
    try:
        return name, "ok", check()
    except Exception as exc:  # every failure is a row, never a traceback
        return name, "FAIL", f"{type(exc).__name__}: {exc}"


def doctor(path: str) -> int:
    try:
        boot = bootstrap(path, configure_logs=False)
    except BootstrapError as exc:
        print(f"mira doctor: {exc}", file=sys.stderr)
        return 2
    container = boot.container
    settings = boot.settings
    checks: list[Check] = [("config", lambda: f"{path} valid")]

    def backend_check() -> str:
        backend = container.secrets_backend()
        return f"{backend.name}: {backend.check()}"

    checks.append((f"secrets:{settings.secrets.backend}", backend_check))
    manager = container.secrets()
    checks.append(("secret references", lambda: _resolve(manager, settings)))
    for name, check in _integration_checks(container).items():
        checks.append((f"integration:{name}", check))
    rows = [_row(name, check) for name, check in checks]
    width = max(len(r[0]) for r in rows)
    for name, status, detail in rows:
        print(f"{name.ljust(width)}  {status.ljust(4)}  {detail}")
    return 0 if all(r[1] == "ok" for r in rows) else 1


def _resolve(manager: object, settings: object) -> str:
    failures = manager.resolve(settings)  # type: ignore[attr-defined]
    if failures:
        raise RuntimeError("; ".join(f"{ref}: {why}" for ref, why in failures))
    count = len(manager.known_refs())  # type: ignore[attr-defined]
    return f"{count} resolved"


def _integration_checks(container: object) -> dict[str, Callable[[], str]]:
    provider = getattr(container, "integration_checks", None)
    return dict(provider()) if provider is not None else {}
