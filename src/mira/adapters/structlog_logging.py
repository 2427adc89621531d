"""Structured logging with structlog: JSON lines (orjson) or console, live-reconfigurable."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from mira.adapters.log_sink import LogSink, Redactor
from mira.domain.config.model import LoggingSettings

LEVELS = {
    "debug": 10,
    "info": 20,
    "warning": 30,
    "warn": 30,
    "error": 40,
    "exception": 40,
    "critical": 50,
    "fatal": 50,
    "msg": 20,
}
FIRST_KEYS = (
    "timestamp",
    "level",
    "logger",
    "message",
    "correlation_id",
    "module",
    "function",
    "line",
)
_SKIP_FRAMES = ("structlog", "logging", "mira.adapters.structlog_logging")
_UTC = dt.UTC


class _State:
    """Process-wide, mutable logging switches read on every call (cheap attribute reads)."""

    threshold = 20
    json = True
    default_correlation_id = "-"


class _NamedSink:
    """What structlog wraps: carries the logger name; all level methods write the line."""

    __slots__ = ("name", "sink")

    def __init__(self, name: str, sink: LogSink) -> None:
        self.name = name
        self.sink = sink

    def msg(self, line: bytes) -> None:
        self.sink.write(REDACTOR(line))

    def urgent(self, line: bytes) -> None:
        self.sink.write(REDACTOR(line), urgent=True)

    debug = info = log = msg
    warning = warn = error = critical = exception = fatal = urgent


class MiraLogger(structlog.BoundLoggerBase):
    """A bound logger that drops lines under the live level before any processing."""

    def _at(self, level: int, method: str, event: str | None, kw: dict[str, Any]) -> Any:
        if level < _State.threshold:
            return None
        return self._proxy_to_logger(method, event, **kw)

    def debug(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(10, "debug", event, kw)

    def info(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(20, "info", event, kw)

    def warning(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(30, "warning", event, kw)

    warn = warning

    def error(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(40, "error", event, kw)

    def exception(self, event: str | None = None, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._at(40, "error", event, kw)

    def critical(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(50, "critical", event, kw)

    def log(self, level: int, event: str | None = None, **kw: Any) -> Any:
        name = logging.getLevelName(level).lower()
        return self._at(level, name if name in LEVELS else "info", event, kw)


class _Timestamps:
    """ISO 8601 UTC with microseconds; the date-time part is formatted once per second."""

    second = -1
    prefix = ""


def timestamp() -> str:
    now = time.time()
    second = int(now)
    if second != _Timestamps.second:
        _Timestamps.prefix = dt.datetime.fromtimestamp(second, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _Timestamps.second = second
    return f"{_Timestamps.prefix}.{int((now - second) * 1_000_000):06d}+00:00"


def write_line(
    logger: str,
    level: str,
    message: str,
    callsite: tuple[str, str, int],
    fields: dict[str, Any],
    correlation_id: str | None = None,
) -> None:
    """The hot path (one access line per request): the same JSON line without the processor
    chain. Falls back to the structlog chain for console output."""
    levelno = LEVELS[level]
    if levelno < _State.threshold:
        return
    if not _State.json:
        get_logger(logger)._at(
            levelno,
            level,
            message,
            {"module": callsite[0], "function": callsite[1], "line": callsite[2], **fields},
        )
        return
    line = {
        "timestamp": timestamp(),
        "level": level.upper(),
        "logger": logger,
        "message": message,
        "correlation_id": correlation_id or _State.default_correlation_id,
        "module": callsite[0],
        "function": callsite[1],
        "line": callsite[2],
        **fields,
    }
    SINK.write(
        REDACTOR(orjson.dumps(line, default=repr, option=orjson.OPT_APPEND_NEWLINE)),
        urgent=levelno >= 30,
    )


def _base(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = timestamp()
    event_dict["level"] = "ERROR" if method == "exception" else method.upper()
    event_dict.setdefault("logger", getattr(logger, "name", "mira"))
    event_dict.setdefault("correlation_id", _State.default_correlation_id)
    if "module" not in event_dict:
        frame = sys._getframe(4)
        while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
            _SKIP_FRAMES
        ):
            frame = frame.f_back
        event_dict["module"] = frame.f_globals.get("__name__", "?").rpartition(".")[2]
        event_dict["function"] = frame.f_code.co_name
        event_dict["line"] = frame.f_lineno
    return event_dict


def _render(logger: WrappedLogger, method: str, event_dict: EventDict) -> bytes:
    if not _State.json:
        text = _CONSOLE(logger, method, event_dict)
        return (text + "\n").encode()
    event_dict["message"] = event_dict.pop("event", None)
    ordered = {k: event_dict.pop(k) for k in FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return orjson.dumps(ordered, default=repr, option=orjson.OPT_APPEND_NEWLINE)


_CONSOLE = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
SINK = LogSink()
REDACTOR = Redactor()


class _StdlibBridge(logging.Handler):
    """Routes stdlib logging (Flask, cheroot, libraries) into the same structured stream."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "logger": record.name,
                "module": record.module,
                "function": record.funcName,
                "line": record.lineno,
            }
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            method = record.levelname.lower()
            get_logger(record.name)._at(
                record.levelno, method if method in LEVELS else "info", record.getMessage(), fields
            )
        except Exception:
            self.handleError(record)


def get_logger(name: str) -> MiraLogger:
    logger: MiraLogger = structlog.get_logger(name)
    return logger


def configure_logging(settings: LoggingSettings, default_correlation_id: str = "-") -> None:
    """Configure once at start-up; later calls (hot reload) only switch level, format and file."""
    SINK.open(settings.file)
    SINK.start_flusher()
    _State.threshold = logging.getLevelName(settings.level)
    _State.json = settings.json_format
    _State.default_correlation_id = default_correlation_id
    if structlog.is_configured() and getattr(configure_logging, "_done", False):
        logging.getLogger().setLevel(_State.threshold)
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _base,
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=MiraLogger,
        logger_factory=lambda name="mira", *args: _NamedSink(name, SINK),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(_State.threshold)
    # watchdog's DEBUG lines describe every inotify event: with a log file in a watched
    # directory each line would cause the next one.
    logging.getLogger("watchdog").setLevel(logging.INFO)
    configure_logging._done = True  # type: ignore[attr-defined]


def apply_logging_settings(settings: LoggingSettings) -> None:
    """Hot-reload: switch level, format and file live. Level and format apply even when the new
    file cannot be opened; then lines keep going to the old destination and OSError (naming the
    path) is raised."""
    _State.threshold = logging.getLevelName(settings.level)
    _State.json = settings.json_format
    logging.getLogger().setLevel(_State.threshold)
    if settings.file != SINK.path:
        SINK.open(settings.file)


def bind_correlation_id(correlation_id: str) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)


def current_correlation_id() -> str:
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value else _State.default_correlation_id


def flush_logs() -> None:
    """Write every queued line, and ask the OS to persist a log file."""
    SINK.flush()
    if SINK.path:
        with contextlib.suppress(OSError):
            os.fsync(SINK._fd)


__all__ = ["apply_logging_settings", "configure_logging", "get_logger"]
