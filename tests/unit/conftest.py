"""The unit tier starts no threads: a test that starts one fails, naming the thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_threads_started(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    yield
    assert started == [], f"a unit test started threads: {started}"
