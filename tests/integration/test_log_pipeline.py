"""Loggers made once (module level, cached by structlog) follow the pipeline configured last
and stay visible to structlog.testing.capture_logs: real LogPipelines writing real files."""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from mira.adapters.structlog_logging import LogPipeline
from mira.domain.config.model import LoggingSettings


def messages(path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def test_a_logger_used_before_a_second_pipeline_writes_through_the_second(tmp_path: Path) -> None:
    log = structlog.get_logger("mira.test.embedding")
    first, second = LogPipeline(), LogPipeline()
    first.configure(LoggingSettings(file=str(tmp_path / "first.log")))
    log.info("one")  # structlog caches this logger now
    second.configure(LoggingSettings(file=str(tmp_path / "second.log")))
    log.info("two")
    with capture_logs() as captured:
        log.info("three")
    log.info("four")
    first.flush()
    second.flush()
    assert messages(tmp_path / "first.log") == ["one"]
    assert messages(tmp_path / "second.log") == ["two", "four"]
    assert [entry["event"] for entry in captured] == ["three"]
