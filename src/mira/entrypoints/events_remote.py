"""`--url`: the journal read over the management listener's /admin endpoints."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from mira.domain.journal_record import JournalRecord

TOKEN_ENV = "MIRA_MANAGEMENT_TOKEN"
TIMEOUT = 10.0


class RemoteError(Exception):
    """One line for stderr; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def get(url: str, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """GET `url` + `path` with the bearer token from MIRA_MANAGEMENT_TOKEN; the JSON body."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise RemoteError(f"--url needs the management token in {TOKEN_ENV}", code=2)
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise RemoteError(f"--url {url!r}: expected http://HOST:PORT", code=2)
    target = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    request = urllib.request.Request(target, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        detail = _error_text(exc.read())
        if exc.code == 401:
            raise RemoteError(f"{base}: the token in {TOKEN_ENV} was refused ({detail})") from None
        raise RemoteError(f"{base}{path} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RemoteError(f"cannot reach {base}: {reason}") from None


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", "no detail"))
    except (ValueError, AttributeError):
        return "no detail"


def read_records(
    url: str,
    after: int = 0,
    since_time: float | None = None,
    types: Sequence[str] = (),
    correlation_id: str | None = None,
) -> list[JournalRecord]:
    """Every record after `after` matching the filters, page by page."""
    out: list[JournalRecord] = []
    while True:
        query = [("since", str(after)), *(("type", t) for t in types)]
        if since_time is not None:
            query.append(("since_time", repr(max(since_time, 0.0))))
        if correlation_id is not None:
            query.append(("correlation_id", correlation_id))
        body = get(url, "/admin/events", query)
        page = [
            JournalRecord(e["position"], e["at"], e["type"], e["correlation_id"], e["fields"])
            for e in body.get("events", [])
        ]
        out += page
        if not body.get("more") or not page:
            return out
        after = page[-1].position


def history(url: str) -> list[dict[str, Any]]:
    generations: list[dict[str, Any]] = get(url, "/admin/config/history").get("generations", [])
    return generations
