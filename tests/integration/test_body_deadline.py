"""The body deadline's watchdog on its own (its real thread): which requests get a 408, and
that it survives a failure.

The protocol object here is a stand-in recording what the engine was asked to send; the cut of
the connection over real sockets is tested against the real service in
tests/integration/test_serving_layer.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from mira.adapters.body_deadline import BodyDeadlines, wire_length
from tests.support import wait_until


class Proto:
    """Records the answers given to it, like granian's protocol object (first one wins)."""

    def __init__(self, fail: bool = False) -> None:
        self.answers: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.fail = fail

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self.fail:
            raise RuntimeError("engine refused the answer")
        self.answers.append((status, dict(headers), json.loads(body)))


def environ(request_id: str) -> dict[str, Any]:
    return {
        "mira.request_id": request_id,
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/messages",
    }


@pytest.fixture
def deadlines() -> Iterator[BodyDeadlines]:
    watchdog = BodyDeadlines(timeout=0.2)
    watchdog.start(local_port=1)  # port 1: no socket of ours matches
    yield watchdog
    watchdog.stop()


def test_a_body_in_before_the_deadline_gets_no_answer_from_the_watchdog(
    deadlines: BodyDeadlines,
) -> None:
    proto = Proto()
    reading = deadlines.begin(proto, environ("in-time"))
    assert deadlines.end(reading) is True
    late = deadlines.begin(Proto(), environ("late"))
    wait_until(lambda: not deadlines.end(late), 5, message="the late one answered")
    assert proto.answers == []


def test_a_late_body_gets_one_json_408_with_its_request_id(deadlines: BodyDeadlines) -> None:
    proto = Proto()
    with capture_logs() as logs:
        reading = deadlines.begin(proto, environ("slow-1"))
        wait_until(lambda: proto.answers, 5, message="the 408")
        assert deadlines.end(reading) is False  # the request learns it was answered
        wait_until(  # logged once the watchdog has given up finding a socket to cut
            lambda: any(e["event"] == "Request body timed out" for e in logs), 5, message="log"
        )
    ((status, headers, body),) = proto.answers
    assert status == 408
    assert headers["x-request-id"] == "slow-1" and headers["connection"] == "close"
    assert body["correlation_id"] == "slow-1" and "server.body_timeout (0.2 s)" in body["error"]
    (line,) = [e for e in logs if e["event"] == "Request body timed out"]
    assert line["correlation_id"] == "slow-1" and line["connection_closed"] is False


def test_the_watchdog_outlives_an_answer_that_fails(deadlines: BodyDeadlines) -> None:
    with capture_logs() as logs:
        deadlines.begin(Proto(fail=True), environ("broken"))
        wait_until(
            lambda: any("failed" in e["event"] for e in logs), 5, message="the failure logged"
        )
        proto = Proto()
        deadlines.begin(proto, environ("next"))
        wait_until(lambda: proto.answers, 5, message="the next 408")
    assert proto.answers[0][2]["correlation_id"] == "next"


def test_wire_length_counts_what_hyper_writes() -> None:
    """Against the bytes a real granian 2.8.9 wrote (captured over loopback)."""
    body = b'{"status":"error"}'
    written = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\nserver: granian\r\ncontent-length: 18\r\n"
        b"date: Wed, 02 Dec 2026 13:04:55 GMT\r\n\r\n" + body
    )
    headers = [("content-type", "application/json"), ("connection", "close")]
    assert wire_length(headers, body) == len(written)
