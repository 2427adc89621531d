"""Structured logging with structlog: JSON lines (orjson) or console, live-reconfigurable.

`LogPipeline` is built once by the container (a Resource): it owns the sink, the redactor and
the live level, and configures structlog (which is process-wide by nature) to write through it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from mira.adapters.log_lines import (
    CONSOLE,
    FIRST_KEYS,
    LEVELS,
    Active,
    MiraLogger,
    NamedSink,
    StdlibBridge,
    caller,
    callsite_fields,
    get_logger,
    timestamp,
)
from mira.adapters.log_sink import LogSink, Redactor, open_log_file
from mira.domain.config.model import LoggingSettings


class LogPipeline:
    """The live level and format, the sink and the redactor of this process's log lines."""

    def __init__(self, sink: LogSink | None = None, redactor: Redactor | None = None) -> None:
        self.sink = sink or LogSink()
        self.redactor = redactor or Redactor()
        self.threshold = 20
        self.json = True
        self.default_correlation_id = "-"
        #: lifecycle lines are written whatever the level (tools like `mira doctor` say no)
        self.lifecycle = True
        #: fields on every line of this process (a worker's index)
        self.fields: dict[str, Any] = {}

    # -- set-up and hot reload -------------------------------------------------------------
    def configure(self, settings: LoggingSettings, default_correlation_id: str = "-") -> None:
        """Open the destination, start the flusher and route structlog and stdlib through
        this pipeline. Raises OSError naming the file when it cannot be opened."""
        self.sink.open(settings.file)
        self.sink.start_flusher()
        self.default_correlation_id = default_correlation_id
        self._set_level(settings)
        Active.pipeline = self
        _CHAIN[:] = _PROCESSORS  # in place: cached loggers hold this very list
        structlog.configure(
            processors=_CHAIN,
            wrapper_class=MiraLogger,
            logger_factory=_named_sink,
            # Cached: building a logger per line cost ~5 us. Safe because the processors are
            # one list changed only in place (structlog.testing.capture_logs does that too) and
            # NamedSink finds the active pipeline per line.
            cache_logger_on_first_use=True,
        )
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(StdlibBridge())
        root.setLevel(self.threshold)
        # watchdog's DEBUG lines describe every inotify event: with a log file in a watched
        # directory each line would cause the next one.
        logging.getLogger("watchdog").setLevel(logging.INFO)

    def _set_level(self, settings: LoggingSettings) -> None:
        self.threshold = LEVELS[settings.level.lower()]
        self.json = settings.json_format
        logging.getLogger().setLevel(self.threshold)

    def apply(self, settings: LoggingSettings) -> None:
        """Hot reload: switch level, format and file live. Level and format apply even when the
        new file cannot be opened; then lines keep going to the old destination and OSError
        (naming the path) is raised."""
        self._set_level(settings)
        if settings.file != self.sink.path:
            self.sink.open(settings.file)

    def check(self, settings: LoggingSettings) -> list[str]:
        """Before a reload is applied: can its log file be opened and written?"""
        path = settings.file
        if path is None or path == self.sink.path:
            return []
        try:
            fd = open_log_file(path)
        except OSError as exc:
            return [f"logging.file: {exc.strerror or exc}"]
        try:
            os.write(fd, b"")
            if os.statvfs(path).f_bavail == 0:
                return [f"logging.file: {path}: the disk is full"]
        except OSError as exc:
            return [f"logging.file: cannot write {path}: {exc.strerror or exc}"]
        finally:
            os.close(fd)
        return []

    # -- writing -----------------------------------------------------------------------------
    def emit(self, line: bytes, urgent: bool) -> None:
        self.sink.write(self.redactor(line), urgent=urgent)

    def write_line(
        self,
        logger: str,
        level: str,
        message: str,
        callsite: tuple[str, str, int],
        fields: dict[str, Any],
        correlation_id: str | None = None,
    ) -> None:
        """The hot path (one access line per request): the same JSON line without the
        processor chain. Falls back to the structlog chain for console output."""
        levelno = LEVELS[level]
        if levelno < self.threshold:
            return
        if not self.json:
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
            "correlation_id": correlation_id or self.default_correlation_id,
            "module": callsite[0],
            "function": callsite[1],
            "line": callsite[2],
            **self.fields,
            **fields,
        }
        self.emit(json_line(line), urgent=levelno >= 30)

    def write_direct(
        self, logger: MiraLogger, levelno: int, method: str, event: str | None, kw: dict[str, Any]
    ) -> bool:
        """The JSON line the processor chain would write, built in one step (a third of the
        chain's cost); False, and nothing written, unless `logger` runs Mira's own chain
        untouched. A chain changed in place (structlog.testing.capture_logs), console output
        or an exception to format take the chain."""
        if not self.json or logger._processors is not _CHAIN or _CHAIN != _PROCESSORS:
            return False
        context = logger._context
        fields = {**context, **kw} if context else kw
        if "exc_info" in fields:
            return False
        for key, value in structlog.contextvars.get_contextvars().items():  # merge_contextvars
            fields.setdefault(key, value)
        fields.setdefault("correlation_id", self.default_correlation_id)  # _defaults
        for key, value in self.fields.items():
            fields.setdefault(key, value)
        for key in ("timestamp", "level", "message"):  # the chain sets them, whatever was given
            fields.pop(key, None)
        head = {  # callsite_fields, then _render's order
            "timestamp": timestamp(),
            "level": "ERROR" if method == "exception" else method.upper(),
            "logger": fields.pop("logger", logger._logger.name),
            "message": event,
            "correlation_id": fields.pop("correlation_id"),
        }
        if "module" in fields:
            for key in ("module", "function", "line"):
                if key in fields:
                    head[key] = fields.pop(key)
        else:
            head["module"], head["function"], head["line"] = caller(sys._getframe(1))
        head.update(fields)
        getattr(logger._logger, method)(json_line(head))  # as the chain ends: NamedSink's method
        return True

    def current_correlation_id(self) -> str:
        value = structlog.contextvars.get_contextvars().get("correlation_id")
        return str(value) if value else self.default_correlation_id

    def flush(self) -> None:
        """Write every queued line, and ask the OS to persist a log file."""
        self.sink.flush()
        self.sink.fsync()


# -- processors (the pipeline is the active one: NamedSink.pipeline) ---------------------------
def _defaults(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    pipeline = logger.pipeline
    event_dict.setdefault("correlation_id", pipeline.default_correlation_id)
    for key, value in pipeline.fields.items():
        event_dict.setdefault(key, value)
    return event_dict


def _render(logger: WrappedLogger, method: str, event_dict: EventDict) -> bytes:
    if not logger.pipeline.json:
        return (CONSOLE(logger, method, event_dict) + "\n").encode()
    event_dict["message"] = event_dict.pop("event", None)
    ordered = {k: event_dict.pop(k) for k in FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return json_line(ordered)


def json_line(fields: dict[str, Any]) -> bytes:
    """One JSON log line: what JSON cannot hold as its repr()."""
    return orjson.dumps(fields, default=repr, option=orjson.OPT_APPEND_NEWLINE)


def _named_sink(name: str = "mira", *args: Any) -> NamedSink:
    return NamedSink(name)


_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    _defaults,
    callsite_fields,
    structlog.processors.format_exc_info,
    _render,
]
_CHAIN: list[Any] = list(_PROCESSORS)


__all__ = ["LogPipeline", "get_logger"]
