"""The service embedded in-process on a real port, with everything it says captured for leaks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mira.app import MiraApplication
from mira.container import Container
from mira.domain import events as ev
from tests.support import free_port, http


class EmbeddedService:
    """MiraApplication on 127.0.0.1 with its own container; logs go to a file in `workdir`.

    Every HTTP body it answers is kept in `captured` so a test can scan all of it for leaks.
    """

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.log_path = workdir / "service.log"
        config.setdefault("server", {}).update(host="127.0.0.1", port=free_port())
        config.setdefault("logging", {})["file"] = str(self.log_path)
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.container = Container()
        self.captured: list[str] = []
        self.app: MiraApplication | None = None

    def start(self) -> EmbeddedService:
        self.app = MiraApplication(str(self.config_path), container=self.container)
        self.app.start()
        return self

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop(timeout=15)

    def get(self, path: str) -> tuple[int, str]:
        assert self.app is not None and self.app.address is not None
        status, _, body = http("GET", f"http://127.0.0.1:{self.app.address[1]}{path}", timeout=5)
        text = body.decode()
        self.captured.append(text)
        return status, text

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, text = self.get("/ready")
        return status, json.loads(text)

    def secret_state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = self.ready()[1].get("secrets", {}).get(name, {})
        return state

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample on /metrics (None when absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$")
        for line in self.get("/metrics")[1].splitlines():
            match = pattern.match(line)
            if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
                return float(match.group(2))
        return None

    def events(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.container.journal().read() if isinstance(e, kind)]

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def assert_no_leak(self, values: list[str]) -> None:
        """No value appears in any log line, metrics page or HTTP body seen so far."""
        self.get("/metrics")
        self.get("/ready")
        assert_absent(values, {"log": self.log_text(), **dict(enumerate(self.captured))})


def assert_absent(values: list[str], texts: dict[Any, str]) -> None:
    assert values and all(values)
    assert any(texts.values()), "nothing was captured: a leak check on no output proves nothing"
    leaks = [(where, v) for where, text in texts.items() for v in values if v in text]
    assert not leaks, f"secret values leaked in {sorted({str(w) for w, _ in leaks})}"


@contextmanager
def embedded(workdir: Path, config: dict[str, Any]) -> Iterator[EmbeddedService]:
    """A started service, always stopped (threads joined, port closed) even when a test fails."""
    service = EmbeddedService(workdir, config)
    try:
        yield service.start()
    finally:
        service.stop()
