"""Generic validation of nested frozen dataclasses from JSON-like values, naming key paths."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")
Check = Callable[[Any], str | None]
#: How much of a rejected value an error quotes: a value can be megabytes long, and errors
#: travel into the log and /ready.
SHOWN_CHARS = 40


def setting(
    default: Any,
    doc: str,
    check: Check | None = None,
    secret: bool = False,
    normalize: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare a config key: its default, a one-line doc, an optional check, whether secret.

    `normalize` maps an accepted value to its canonical form (after `check` passed).
    """
    meta = {"doc": doc, "check": check, "secret": secret, "normalize": normalize}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        factory = type(default) if dataclasses.is_dataclass(default) else (lambda: default)
        return dataclasses.field(default_factory=factory, metadata=meta, repr=not secret)
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def section(cls: type[T]) -> Any:
    """Declare a nested section whose every key has a default."""
    return dataclasses.field(
        default_factory=cls, metadata={"doc": cls.__doc__ or "", "section": True}
    )


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """Resolved annotations, once per class (resolving them costs more than the parse)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def quote(value: Any) -> str:
    """A rejected value as errors show it: its repr, cut to a short prefix."""
    if isinstance(value, str):
        if len(value) <= SHOWN_CHARS:
            return repr(value)
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} digits)"
    return f"a {_type_name(value)}"


def key_path(path: str, key: object) -> str:
    """`path.key`, with an over-long key name cut (key names come from the file too)."""
    name = str(key)
    if len(name) > SHOWN_CHARS:
        name = f"{name[:SHOWN_CHARS]}...({len(name)} characters)"
    return f"{path}.{name}" if path else name


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"list of {_describe(get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "object"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        dict: "object",
        list: "list",
    }.get(type(value), type(value).__name__)


def _coerce(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            sub: list[str] = []
            result = _coerce(arg, value, path, sub)
            if not sub:
                return result
        errors.append(f"{path}: expected {_describe(tp)}, got {_type_name(value)}")
        return None
    if origin is Literal:
        if value in get_args(tp) and type(value) is type(get_args(tp)[0]):
            return value
        errors.append(f"{path}: expected {_describe(tp)}, got {quote(value)}")
        return None
    if origin is tuple:
        if not isinstance(value, list):
            errors.append(f"{path}: expected {_describe(tp)}, got {_type_name(value)}")
            return ()
        return tuple(
            _coerce(get_args(tp)[0], v, f"{path}[{i}]", errors) for i, v in enumerate(value)
        )
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, path, errors)  # type: ignore[arg-type]
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    errors.append(f"{path}: expected {_describe(tp)}, got {_type_name(value)}")
    return None


def parse_dataclass(cls: type[T], raw: Any, path: str, errors: list[str]) -> T:
    """Build `cls` from `raw`, appending one message per problem (with its key path) to errors."""
    if not isinstance(raw, Mapping):
        errors.append(f"{path or '<root>'}: expected an object, got {_type_name(raw)}")
        return cls()
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            where = key_path(path, key)
            errors.append(f"{where}: unknown key (known keys: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        where = f"{path}.{name}" if path else name
        before = len(errors)
        value = _coerce(hints[name], raw[name], where, errors)
        if len(errors) == before:
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                errors.append(f"{where}: {problem}")
            else:
                normalize = f.metadata.get("normalize")
                values[name] = normalize(value) if normalize else value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    path: str
    type: str
    default: Any
    doc: str
    secret: bool


def iter_keys(cls: type[Any], prefix: str = "") -> Iterator[KeyInfo]:
    """Every leaf key of a settings tree with its type, default and doc (for docs and tests)."""
    hints = _hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        if f.metadata.get("section"):
            yield from iter_keys(hints[f.name], path)
        else:
            yield KeyInfo(
                path,
                _describe(hints[f.name]),
                getattr(instance, f.name),
                f.metadata.get("doc", ""),
                bool(f.metadata.get("secret")),
            )


def to_dict(value: Any) -> Any:
    """A settings tree as plain JSON-compatible data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [to_dict(v) for v in value]
    return value


def secret_paths(cls: type[Any]) -> frozenset[str]:
    """Key paths declared secret (masked in output unless they hold a secret:// reference)."""
    return frozenset(k.path for k in iter_keys(cls) if k.secret)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out
