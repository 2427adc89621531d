"""The Flask app on the management listener: probes, metrics and the token-guarded /admin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from mira.adapters.bearer_auth import HEADER, BearerTokens
from mira.adapters.flask_web import RouteRequest
from mira.adapters.probe_views import ReadinessCheck, add_probes
from mira.adapters.prometheus_metrics import Metrics
from mira.adapters.sqlite_journal import JournalUnavailable, open_reader, read_records
from mira.adapters.structlog_logging import LogPipeline
from mira.adapters.web_json import JsonResponses
from mira.adapters.wsgi_context import RequestContext
from mira.domain.config.history import CONFIG_TYPES, config_history
from mira.domain.journal_record import JournalRecord, iso_time, matching, record_dict, to_record
from mira.domain.ports import StateView

log = structlog.get_logger("mira.management")
#: Most events one /admin/events answer carries; the caller asks again from the last position.
PAGE = 1000


class BadQuery(ValueError):
    """A query parameter that cannot be used (the message names it)."""


def create_management_app(
    bus: StateView,
    metrics: Metrics,
    logs: LogPipeline,
    admin_token: BearerTokens,
    journal_path: Callable[[], str | None],
    readiness_checks: dict[str, ReadinessCheck] | None = None,
    render_metrics: Callable[[], bytes] | None = None,
    memory_events: Callable[[], list[tuple[int, object]]] | None = None,
) -> Flask:
    """`journal_path()`: the journal file /admin reads; None: the events `memory_events()`
    keeps (the in-memory journal's, with their positions), when it is given."""
    responses = JsonResponses(logs)
    app = Flask("mira-management")
    app.request_class = RouteRequest
    checks = readiness_checks if readiness_checks is not None else {}
    add_probes(app, bus, metrics, responses.ok, checks, render_metrics)

    def read(**filters: Any) -> list[JournalRecord]:
        path = journal_path()
        if path is None:
            if memory_events is None:
                raise JournalUnavailable("-", "journal.path is not set: events are in memory only")
            return matching((to_record(p, e) for p, e in memory_events()), **filters)
        conn = open_reader(path)
        try:
            return read_records(conn, path, **filters)
        finally:
            conn.close()

    def guarded(view: Callable[[], Response]) -> Response:
        if not admin_token.configured:
            return responses.unauthorized("management.token is not set: /admin is closed")
        problem = admin_token.problem(request.headers.get(HEADER))
        if problem is not None:
            return responses.unauthorized(problem)
        try:
            return view()
        except BadQuery as exc:
            return responses.error(400, str(exc), field="query")
        except JournalUnavailable as exc:
            return responses.error(503, f"journal: {exc.reason}")

    @app.get("/admin/events")
    def admin_events() -> Response:
        def view() -> Response:
            records = read(
                after=_number("since", int, 0),
                since_time=_number("since_time", float, None),
                types=request.args.getlist("type"),
                correlation_id=request.args.get("correlation_id"),
            )
            page = records[:PAGE]
            body = {"events": [record_dict(r) for r in page], "more": len(records) > PAGE}
            return responses.ok(body)

        return guarded(view)

    @app.get("/admin/config/history")
    def admin_history() -> Response:
        def view() -> Response:
            entries = config_history(read(types=CONFIG_TYPES))
            rows = [{**e.summary(), "time": iso_time(e.time), "at": e.time} for e in entries]
            return responses.ok({"generations": rows})

        return guarded(view)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return responses.error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Response:
        log.exception("Unhandled error on the management listener", path=request.path)
        return responses.error(500, "internal server error")

    app.wsgi_app = RequestContext(app.wsgi_app, metrics, logs)  # type: ignore[method-assign]
    return app


def _number(name: str, kind: type[Any], default: Any) -> Any:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BadQuery(f"query parameter {name!r} must be a {kind.__name__}") from None
    if value < 0:
        raise BadQuery(f"query parameter {name!r} must not be negative")
    return value
