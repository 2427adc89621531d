"""What every request must pass before a view reads it: header size, and the body's.

The engine (granian's hyper) parses HTTP; these checks are the ones it leaves to the app, so
that the answer is Mira's JSON with the request's X-Request-ID, and the connection closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

CHUNK = 65536


class RequestRejected(Exception):
    """The request cannot be served; `status` is 408, 413 or 431. Its connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_request(environ: Mapping[str, Any], max_header_bytes: int) -> None:
    """431 for a header block over max_header_bytes, before anything reads the body.

    Ambiguous framing never gets here: the engine answers two Content-Lengths with 400 and
    reads a request with both Content-Length and Transfer-Encoding as chunked, closing its
    connection after the answer (RFC 9112 6.1), so nothing smuggled behind it is served."""
    rejected = environ.get("mira.rejected")  # the engine's verdict on the body (413, 408)
    if rejected is not None:
        raise rejected
    size = len(environ.get("CONTENT_TYPE", "")) + len(environ.get("CONTENT_LENGTH", ""))
    for key, value in environ.items():
        if key[:5] == "HTTP_":
            size += len(key) + len(value)  # about "Name: value\r\n", minus the \r\n
    if size > max_header_bytes:
        raise RequestRejected(
            431,
            f"request headers are {size} bytes, over server.max_header_bytes ({max_header_bytes})",
        )


def read_body(stream: IO[bytes], limit: int, length: int | None = None) -> bytes:
    """The whole body, or 413 as soon as it is over `limit` bytes (chunked bodies too: they
    carry no Content-Length to check first). With a Content-Length (`length`, already
    checked against the limit by Werkzeug) one read takes it all: each read crosses into the
    engine and back."""
    if length is not None and length <= limit:
        return stream.read(length) if length else b""
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestRejected(
                413, f"request body larger than server.max_body_bytes ({limit} bytes)"
            )
    return b"".join(chunks)
