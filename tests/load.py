"""Keep-alive clients sending steady traffic while a service stops: what each request got."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException

from tests.support import wait_until

JSON = {"Content-Type": "application/json"}
_IDS = itertools.count(1)


@dataclass
class LoadResult:
    ok: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    #: the X-Request-ID each failed request was sent with (to look for it in the service's log)
    failed_ids: list[str] = field(default_factory=list)


def keepalive_client(
    port: int,
    body: str,
    stop: threading.Event,
    result: LoadResult,
    lock: threading.Lock,
    requests: int = 400,
    seconds: float = 15,
    path: str = "/api/v1/messages",
) -> None:
    """One keep-alive client (http.client reconnects after `Connection: close`): requests until
    refused, stopped, `requests` sent or `seconds` passed."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.monotonic() + seconds
    try:
        for _ in range(requests):
            if stop.is_set() or time.monotonic() > deadline:
                return
            request_id = f"load-{next(_IDS)}"
            try:
                conn.request("POST", path, body, {**JSON, "X-Request-ID": request_id})
            except ConnectionRefusedError:  # never accepted: the listener was closed
                with lock:
                    result.refused += 1
                return
            try:
                response = conn.getresponse()
                response.read()
                status, detail = response.status, f"HTTP {response.status}"
            except (OSError, HTTPException) as exc:
                status, detail = 0, f"{type(exc).__name__}: {exc}"
            with lock:
                if status == 200:
                    result.ok += 1
                else:
                    result.failures.append(detail)
                    result.failed_ids.append(request_id)
    finally:
        conn.close()


def stop_under_load(
    port: int,
    body: str,
    stop_service: Callable[[], None],
    clients: int = 8,
    flowing: int = 40,
    requests: int = 400,
) -> LoadResult:
    """Start `clients`, wait until `flowing` requests succeeded, call `stop_service()` (which
    returns once the service has exited), then collect what every request got."""
    result, lock, stop = LoadResult(), threading.Lock(), threading.Event()
    threads = [
        threading.Thread(
            target=keepalive_client,
            args=(port, body, stop, result, lock, requests, 20 + flowing / 10),
        )
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: result.ok >= flowing, timeout=15, message=f"load flowing: {result}")
        stop_service()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return result
