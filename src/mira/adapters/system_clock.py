"""The real clock and id generator."""

from __future__ import annotations

import time
import uuid


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class UuidIds:
    def new_id(self) -> str:
        return str(uuid.uuid4())
