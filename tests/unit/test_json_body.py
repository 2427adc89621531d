"""The message API's body rules: UTF-8 application/json, bounded depth, bounded answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json

import pytest

from mira.adapters import json_body
from mira.adapters.json_body import MAX_DEPTH, MAX_RESPONSE_BYTES, BodyError
from mira.adapters.request_limits import CHUNK, RequestRejected, check_request, read_body


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("mimetype", "charset"),
    [("text/plain", None), ("", None), ("application/json", "latin-1"), ("text/json", "utf-8")],
)
def test_anything_but_utf8_json_is_415_naming_the_type(mimetype: str, charset: str | None) -> None:
    with pytest.raises(BodyError) as caught:
        json_body.check_content_type(mimetype, charset)
    assert caught.value.status == 415 and "application/json" in str(caught.value)


def test_json_with_a_utf8_charset_is_fine() -> None:
    json_body.check_content_type("application/json", "UTF-8")
    json_body.check_content_type("application/json", None)


@pytest.mark.parametrize(
    ("raw", "status", "text"),
    [
        (_nest(1000).encode(), 400, f"nested more than {MAX_DEPTH} deep"),
        (_nest(MAX_DEPTH + 1).encode(), 400, "nested"),
        (('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)).encode(), 400, "nested"),
        (('[{"a":' * 17 + "[]" + "}]" * 17).encode(), 400, "nested"),  # 35 deep
        (b"1" + b"0" * 5000, 400, "malformed JSON at line 1, column 1"),
        (b"NaN", 400, "malformed JSON"),
        (b'"\\ud800"', 400, "malformed JSON"),
        (json.dumps({"a": 1}).encode("utf-16"), 415, "UTF-8"),
        (json.dumps({"a": 1}).encode("utf-32-le"), 415, "UTF-8"),
    ],
)
def test_bad_bodies_are_named(raw: bytes, status: int, text: str) -> None:
    with pytest.raises(BodyError) as caught:
        json_body.parse(raw)
    assert caught.value.status == status and str(caught.value).startswith("body: ")
    assert text in str(caught.value)


def test_nesting_up_to_the_bound_and_a_bom_are_accepted() -> None:
    assert json_body.parse(_nest(MAX_DEPTH).encode()) is not None
    wide = json.dumps({"rows": [[{"a": [1]}] for _ in range(100)], "text": "[{" * 100})
    assert json_body.parse(wide.encode())["text"] == "[{" * 100  # many containers, 5 deep
    assert json_body.parse(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_answers_are_utf8_and_bounded() -> None:
    assert json_body.encode({"t": "é\ud800"}) == '{"t":"é\\ud800"}'.encode()
    with pytest.raises(BodyError, match=str(MAX_RESPONSE_BYTES)):
        json_body.encode({"t": "x" * MAX_RESPONSE_BYTES})


def test_answers_hold_what_json_cannot_as_text_as_the_json_module_would() -> None:
    when = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)
    body = {"when": when, 1: "int key", "big": 2**70, "ok": [1.5, None, True]}
    expected = json.dumps(body, default=str, separators=(",", ":"), ensure_ascii=False)
    assert json_body.dumps(body) == expected.encode()  # 2**70: the json module's fallback
    small = {"when": when, 1: "int key", "dc": Point(1, 2)}
    assert json.loads(json_body.dumps(small)) == {
        "when": str(when),
        "1": "int key",
        "dc": "Point(x=1, y=2)",
    }


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_a_body_is_read_whole_or_refused_with_413_once_over_the_limit() -> None:
    assert read_body(io.BytesIO(b"x" * 100), 100) == b"x" * 100
    assert read_body(io.BytesIO(b"x" * 100), 100, length=100) == b"x" * 100
    assert read_body(io.BytesIO(b""), 100, length=0) == b""
    with pytest.raises(RequestRejected) as caught:
        read_body(io.BytesIO(b"x" * 101), 100)
    assert caught.value.status == 413 and "server.max_body_bytes (100 bytes)" in str(caught.value)
    endless = io.BytesIO(b"y" * (CHUNK * 3))
    with pytest.raises(RequestRejected):
        read_body(endless, CHUNK)
    assert endless.tell() <= CHUNK + 1  # it stopped reading just past the limit


def test_a_header_block_over_max_header_bytes_is_431_naming_the_setting() -> None:
    environ = {"HTTP_HOST": "mira", "HTTP_X_BIG": "a" * 2000, "CONTENT_TYPE": "text/plain"}
    check_request(environ, 4096)
    with pytest.raises(RequestRejected) as caught:
        check_request(environ, 2000)
    assert caught.value.status == 431 and "server.max_header_bytes (2000)" in str(caught.value)
