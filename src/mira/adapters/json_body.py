"""The message API's JSON in and out: UTF-8 `application/json` only, bounded depth and size."""

from __future__ import annotations

import json
from typing import Any

import orjson

EXPECTED_TYPE = "application/json"
#: containers inside containers a message may have (plans need 5)
MAX_DEPTH = 32
#: the largest answer the message API gives (the plans' bounds keep theirs far below it)
MAX_RESPONSE_BYTES = 1048576
_BOM = b"\xef\xbb\xbf"


class BodyError(Exception):
    """The body cannot be read as a message; `status` is 400 or 415."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"body: {message}")
        self.status = status


def check_content_type(mimetype: str, charset: str | None) -> None:
    """415 unless the request says `application/json` (charset, if given, utf-8)."""
    if mimetype != EXPECTED_TYPE:
        got = mimetype or "no Content-Type"
        raise BodyError(415, f"Content-Type must be {EXPECTED_TYPE}, got {got[:60]}")
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise BodyError(415, f"Content-Type must be {EXPECTED_TYPE} in UTF-8, got {charset[:30]}")


def parse(raw: bytes) -> Any:
    """The JSON value of `raw`, or BodyError naming what is wrong with it."""
    encoding = json.detect_encoding(raw)
    if encoding not in ("utf-8", "utf-8-sig"):
        raise BodyError(415, f"{EXPECTED_TYPE} must be UTF-8 encoded, got {encoding}")
    try:
        value = orjson.loads(raw.removeprefix(_BOM))
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg:
            raise BodyError(400, f"JSON nested more than {MAX_DEPTH} deep") from None
        where = f"line {exc.lineno}, column {exc.colno}"
        raise BodyError(400, f"malformed JSON at {where}: {exc.msg}") from None
    # nesting deeper than MAX_DEPTH needs more containers than that, each opened by a byte
    # (strings may hold more): most bodies need no walk (its cost is ~2 % of a request)
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth_over(value, MAX_DEPTH):
        raise BodyError(400, f"JSON nested more than {MAX_DEPTH} deep")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: no recursion on hostile input)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


_ORJSON = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON; what JSON cannot hold becomes its str(). orjson (about 10x faster
    than the json module), or the json module for what orjson refuses (a lone surrogate, an
    integer over 64 bits), with lone surrogates escaped."""
    try:
        return orjson.dumps(body, default=str, option=_ORJSON)
    except TypeError:  # orjson.JSONEncodeError
        text = json.dumps(body, default=str, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "backslashreplace")


def encode(body: Any) -> bytes:
    """UTF-8 JSON (lone surrogates escaped), or BodyError when over MAX_RESPONSE_BYTES."""
    data = dumps(body)
    if len(data) > MAX_RESPONSE_BYTES:
        raise BodyError(
            400, f"the answer would be {len(data)} bytes, over {MAX_RESPONSE_BYTES}: ask for less"
        )
    return data
