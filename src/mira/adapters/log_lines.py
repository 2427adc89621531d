"""The pieces of a log line: levels, timestamps, call sites, the bound logger that drops lines
under the live level, and the bridge from stdlib logging. `LogPipeline` puts them together."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from structlog.typing import EventDict, WrappedLogger

if TYPE_CHECKING:
    from mira.adapters.structlog_logging import LogPipeline

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
_SKIP_FRAMES = (
    "structlog",
    "logging",
    "mira.adapters.structlog_logging",
    "mira.adapters.log_lines",
)
_UTC = dt.UTC
#: a line with `lifecycle=True` (reloads, rotations, shutdown phases) is written at any level
LIFECYCLE = "lifecycle"


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


class Active:
    """The pipeline configured last in this process (structlog's configuration is process-wide
    too). Loggers look it up on every line, so structlog may cache them: one made before an
    embedding app's second container still writes through the pipeline configured last."""

    pipeline: LogPipeline | None = None


class NamedSink:
    """What structlog wraps: carries the logger name; writes through the active pipeline."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def pipeline(self) -> LogPipeline:
        pipeline = Active.pipeline
        if pipeline is None:
            raise RuntimeError("no LogPipeline is configured in this process")
        return pipeline

    def msg(self, line: bytes) -> None:
        self.pipeline.emit(line, urgent=False)

    def urgent(self, line: bytes) -> None:
        self.pipeline.emit(line, urgent=True)

    debug = info = log = msg
    warning = warn = error = critical = exception = fatal = urgent


class MiraLogger(structlog.BoundLoggerBase):
    """A bound logger that drops lines under the live level before any processing."""

    def _at(self, level: int, method: str, event: str | None, kw: dict[str, Any]) -> Any:
        pipeline = self._logger.pipeline
        if level < pipeline.threshold and not (pipeline.lifecycle and kw.get(LIFECYCLE)):
            return None
        if pipeline.write_direct(self, level, method, event, kw):
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


def callsite_fields(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    event_dict["timestamp"] = timestamp()
    event_dict["level"] = "ERROR" if method == "exception" else method.upper()
    event_dict.setdefault("logger", getattr(logger, "name", "mira"))
    if "module" not in event_dict:
        module, function, line = caller(sys._getframe(4))
        event_dict["module"], event_dict["function"], event_dict["line"] = module, function, line
    return event_dict


def caller(frame: FrameType) -> tuple[str, str, int]:
    """(module, function, line) of the first frame from `frame` outwards that is not logging's
    own (structlog, stdlib logging, Mira's pipeline)."""
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_SKIP_FRAMES):
        frame = frame.f_back
    return (
        frame.f_globals.get("__name__", "?").rpartition(".")[2],
        frame.f_code.co_name,
        frame.f_lineno,
    )


CONSOLE = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)


class StdlibBridge(logging.Handler):
    """Routes stdlib logging (Flask, granian, libraries) into the same structured stream."""

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
