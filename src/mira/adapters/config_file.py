"""Reading the config file: never raises; every unreadable case is a reason naming the file."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

MAX_CONFIG_BYTES = 10 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ConfigSnapshot:
    """What the config file held at one read: its text, or why it could not be read."""

    path: str
    text: str | None
    error: str | None
    digest: str


class _UnreadableError(Exception):
    """The config file cannot be used; the message names the file and the problem."""


def read_config_file(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> ConfigSnapshot:
    """Read and decode the config file; never raises, problems go into `error`."""
    try:
        raw = _read_raw(path, max_bytes)
        text = _decode(path, raw)
    except _UnreadableError as exc:
        reason = str(exc)
        digest = hashlib.sha256(b"error:" + reason.encode()).hexdigest()
        return ConfigSnapshot(path=path, text=None, error=reason, digest=digest)
    return ConfigSnapshot(path=path, text=text, error=None, digest=hashlib.sha256(raw).hexdigest())


def _read_raw(path: str, max_bytes: int) -> bytes:
    try:
        # O_NONBLOCK so that a FIFO in place of the file cannot block the watcher.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _UnreadableError(_open_error(path, exc)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _UnreadableError(f"config file {path!r} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise _UnreadableError(f"config file {path!r} is not a regular file")
        if info.st_size > max_bytes:
            raise _UnreadableError(_too_large(path, info.st_size, max_bytes))
        return _read_bounded(fd, path, max_bytes)
    except OSError as exc:
        raise _UnreadableError(f"cannot read config file {path!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read_bounded(fd: int, path: str, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:  # the file grew after the size check
            raise _UnreadableError(_too_large(path, total, max_bytes))
    return b"".join(chunks)


def _too_large(path: str, size: int, max_bytes: int) -> str:
    return f"config file {path!r} is too large: {size} bytes, the limit is {max_bytes} bytes"


def _open_error(path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and os.path.islink(path):
        target = os.readlink(path)
        return f"config file {path!r} is a symlink to {target!r}, which does not exist"
    if exc.errno == errno.ENOENT:
        return f"config file {path!r} does not exist"
    if exc.errno == errno.ELOOP:
        return f"config file {path!r} is a symlink loop (too many levels of symbolic links)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied reading config file {path!r}"
    if exc.errno == errno.ENOTDIR:
        return f"config file {path!r} cannot exist: a parent in its path is not a directory"
    return f"cannot open config file {path!r}: {exc.strerror}"


def _decode(path: str, raw: bytes) -> str:
    if raw.startswith(_BOM):
        raise _UnreadableError(
            f"config file {path!r} starts with a UTF-8 byte order mark (BOM); "
            "save it as UTF-8 without BOM"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        raise _UnreadableError(
            f"config file {path!r} is not valid UTF-8 text "
            f"(byte 0x{bad:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
