"""The supervisor's end of one worker: its process, its control channel, what it last said."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mira.adapters.request_metrics import decode_rows
from mira.adapters.worker_channel import Channel, ChannelClosed

Message = dict[str, Any]


class WorkerLink:
    """Asks (a reply future per request id) and tells; a reader thread takes heartbeats,
    replies, and the worker's own requests (handed to `on_request` on a thread of their own,
    since answering one may need this very reader)."""

    def __init__(
        self,
        index: int,
        proc: subprocess.Popen[bytes],
        channel: Channel,
        on_request: Callable[[WorkerLink, Message], None],
    ) -> None:
        self.index = index
        self.proc = proc
        self.channel = channel
        self._on_request = on_request
        self._pending: dict[int, Future[Message]] = {}
        self._ids = itertools.count(1)
        self.last_heard = time.monotonic()
        self.in_flight = 0
        self.threads = (0, 0)  # its engine's threads: started, parked
        self.rows: dict[Any, list[float]] = {}  # its request metrics, last seen
        self.gone = False
        threading.Thread(target=self._read, name=f"mira-worker-{index}", daemon=True).start()

    def ask(self, message: Message) -> Future[Message]:
        rid = next(self._ids)
        reply: Future[Message] = Future()
        self._pending[rid] = reply
        if not self.tell({**message, "rid": rid}):
            reply.cancel()
        return reply

    def tell(self, message: Message) -> bool:
        try:
            self.channel.send(message)
            return True
        except ChannelClosed:
            return False

    @staticmethod
    def wait(reply: Future[Message], timeout: float) -> Message | None:
        try:
            return reply.result(timeout)
        except (FutureTimeout, Exception):
            return None

    def close(self) -> None:
        self.gone = True
        self.channel.close()

    def _read(self) -> None:
        with contextlib.suppress(ChannelClosed):
            while True:
                message = self.channel.recv()
                self.last_heard = time.monotonic()
                op = message.get("op")
                if op == "heartbeat":
                    self.in_flight = int(message.get("in_flight", 0))
                    started, parked = message.get("threads", (0, 0))
                    self.threads = (int(started), int(parked))
                    self.rows = decode_rows(message.get("rows", []))
                elif op is not None:
                    threading.Thread(
                        target=self._on_request, args=(self, message), daemon=True
                    ).start()
                elif (
                    reply := self._pending.pop(int(message.get("reply_to", 0)), None)
                ) is not None:
                    reply.set_result(message)
        for reply in list(self._pending.values()):
            reply.cancel()
