"""Loggers made once (module level, cached by structlog) follow the pipeline configured last
and stay visible to structlog.testing.capture_logs: real LogPipelines writing real files."""

from __future__ import annotations

import json
import logging
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


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_direct_json_line_is_the_one_the_processor_chain_writes(tmp_path: Path) -> None:
    """Mira builds a JSON line in one step when its own processor chain is in place; every
    field, its value and the order of the fields are those the chain gives the same call."""
    from mira.adapters import structlog_logging

    pipeline = LogPipeline()
    pipeline.configure(LoggingSettings(level="WARNING", file=str(tmp_path / "mira.log")))
    pipeline.fields = {"worker": 3}
    log = structlog.get_logger("mira.test.direct")
    bridged = logging.getLogger("some.library")

    def calls() -> None:
        structlog.contextvars.clear_contextvars()
        log.warning("no correlation id yet", count=1)
        structlog.contextvars.bind_contextvars(correlation_id="req-7", config_generation=2)
        log.error("Processing message", message_type="generate_plan", obj=object)
        log.bind(job="sync").warning("bound", attempt=2)
        log.warning("given", logger="other", module="m", line=9, level="x", message="y")
        log.info("Configuration reloaded successfully", lifecycle=True)  # under the level
        log.info("dropped: under the level")
        bridged.warning("from %s", "stdlib")
        structlog.contextvars.clear_contextvars()

    calls()
    direct = _lines(tmp_path / "mira.log")  # warnings are written at once, without a flush
    noop = lambda logger, method, event_dict: event_dict  # noqa: E731
    structlog_logging._CHAIN.insert(0, noop)  # changed in place: the chain runs
    try:
        calls()
    finally:
        structlog_logging._CHAIN.remove(noop)
    pipeline.flush()
    chain = _lines(tmp_path / "mira.log")[len(direct) :]
    assert len(direct) == len(chain) == 6
    for ours, theirs in zip(direct, chain, strict=True):
        assert ours.pop("timestamp") and theirs.pop("timestamp")
        assert list(ours.items()) == list(theirs.items())
    assert direct[0]["correlation_id"] == "-" and direct[0]["worker"] == 3
    assert direct[1]["module"] == "test_log_pipeline" and direct[1]["function"] == "calls"
    assert direct[2]["job"] == "sync" and direct[5]["logger"] == "some.library"
