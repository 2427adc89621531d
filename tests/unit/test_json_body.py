"""The message API's body rules: UTF-8 application/json, bounded depth, bounded answers."""

from __future__ import annotations

import json

import pytest

from mira.adapters import json_body
from mira.adapters.json_body import MAX_DEPTH, MAX_RESPONSE_BYTES, BodyError


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
    assert json_body.parse(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_answers_are_utf8_and_bounded() -> None:
    assert json_body.encode({"t": "é\ud800"}) == '{"t":"é\\ud800"}'.encode()
    with pytest.raises(BodyError, match=str(MAX_RESPONSE_BYTES)):
        json_body.encode({"t": "x" * MAX_RESPONSE_BYTES})
