"""Strict JSON decoding of config text: finite numbers, no duplicate keys, errors with lines."""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from typing import Any

from mira.domain.config.schema import key_path

# The standard library's pure-Python scanner parts (typeshed does not declare them).
_DECODER: Any = json.decoder
_SCANNER: Any = json.scanner
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class _DuplicateKey(Exception):
    """Raised by the fast pass; the slow pass then finds where the key is."""


class _Located(Exception):
    def __init__(self, path: str, position: int) -> None:
        self.path, self.position = path, position


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def parse_json(text: str, source: str) -> tuple[Any, str | None]:
    """Decode JSON, naming the file, line and column of a syntax error or a duplicate key."""
    if text.startswith("\ufeff"):
        return None, f"{source}: starts with a UTF-8 byte order mark (BOM); save it without one"
    if not text.strip():
        return None, f"{source}: file is empty (an empty configuration is written {{}})"
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_pairs), None
    except _DuplicateKey:
        return None, f"{source}: {_locate_duplicate(text)}"
    except ValueError as exc:
        if not isinstance(exc, json.JSONDecodeError):
            return None, f"{source}: invalid JSON: {exc}"
        return None, f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    except RecursionError:
        return None, f"{source}: invalid JSON: nested too deeply"


def _locate_duplicate(text: str) -> str:
    """The first duplicate key's path and line: a second, slower pass that tracks positions.

    It runs only on text the fast pass decoded up to a duplicate, so it skips syntax checks
    the standard decoder already made.
    """
    try:
        _PositionDecoder().decode(text)
    except _Located as found:
        line = text.count("\n", 0, found.position) + 1
        column = found.position - text.rfind("\n", 0, found.position)
        return f"duplicate key {found.path} at line {line}, column {column} (a key may appear once)"
    except (RecursionError, ValueError):
        pass
    return "duplicate key (a key may appear once in an object)"


class _PositionDecoder(json.JSONDecoder):
    """The pure-Python decoder with objects and arrays parsed here, keeping the key path."""

    def __init__(self) -> None:
        super().__init__(parse_constant=_no_constant)
        self._path: list[str] = []
        self.parse_object = self._object
        self.parse_array = self._array
        self.scan_once = _SCANNER.py_make_scanner(self)

    def _here(self, last: str) -> str:
        path = ""
        for part in [*self._path, last]:
            path = f"{path}{part}" if part.startswith("[") else key_path(path, part)
        return path

    def _object(
        self, s_and_end: tuple[str, int], strict: bool, scan_once: Any, *_: Any
    ) -> tuple[Any, int]:
        s, end = s_and_end
        seen: set[str] = set()
        end = _skip(s, end)
        if s[end] == "}":
            return {}, end + 1
        while True:
            key_at = end
            key, end = _DECODER.scanstring(s, end + 1, strict)
            if key in seen:
                raise _Located(self._here(key), key_at)
            seen.add(key)
            end = _skip(s, _skip(s, end) + 1)  # past the colon
            self._path.append(key)
            _, end = scan_once(s, end)
            self._path.pop()
            end = _skip(s, end)
            if s[end] == "}":
                return {}, end + 1
            end = _skip(s, end + 1)  # past the comma

    def _array(self, s_and_end: tuple[str, int], scan_once: Any) -> tuple[Any, int]:
        s, end = s_and_end
        end = _skip(s, end)
        index = 0
        while s[end] != "]":
            self._path.append(f"[{index}]")
            _, end = scan_once(s, end)
            self._path.pop()
            end = _skip(s, end)
            if s[end] == ",":
                end = _skip(s, end + 1)
            index += 1
        return [], end + 1


def _skip(s: str, end: int) -> int:
    return _WHITESPACE.match(s, end).end()  # type: ignore[union-attr]
