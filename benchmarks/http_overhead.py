"""Throughput of the same Flask app on cheroot with and without Mira's request path.

Mira's request path = correlation id (X-Request-ID), one JSON access line, request metrics.
Rounds alternate bare/mira (threaded servers vary +-20 % run to run) and the median ratio is
reported. Run: `.venv/bin/python benchmarks/http_overhead.py [--seconds 5 --rounds 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _load import rate


def serve(mode: str, port: int, log_file: str) -> None:
    from flask import Response

    from mira.adapters.cheroot_server import CherootServer
    from mira.adapters.flask_web import create_app
    from mira.adapters.memory_journal import InMemoryJournal
    from mira.adapters.prometheus_metrics import Metrics
    from mira.adapters.structlog_logging import configure_logging
    from mira.domain.config.model import LoggingSettings
    from mira.service_layer.bus import MessageBus
    from mira.service_layer.messages import MessageHandlers

    configure_logging(LoggingSettings(file=log_file))
    app = create_app(MessageBus(InMemoryJournal()), Metrics(), MessageHandlers())  # type: ignore[arg-type]

    @app.get("/bench")
    def bench() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    if mode == "bare":
        app.wsgi_app = app.wsgi_app.app  # type: ignore[attr-defined]
    server = CherootServer(app, host="127.0.0.1", port=port, threads=8)
    server.bind()
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--serve", choices=["bare", "mira"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-file", default=os.devnull)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.log_file)
        return
    from tests.support import free_port, wait_until

    tmp = tempfile.mkdtemp(prefix="mira-bench-")
    servers = {}
    for mode in ("bare", "mira"):
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                mode,
                "--port",
                str(port),
                "--log-file",
                os.path.join(tmp, f"{mode}.log"),
            ]
        )
        servers[mode] = (port, proc)
    try:
        for port, _ in servers.values():
            wait_until(lambda p=port: _up(p), timeout=30, message="server up")
        rates: dict[str, list[float]] = {"bare": [], "mira": []}
        tool = ""
        for _ in range(args.rounds):
            for mode in ("bare", "mira"):
                value, tool = rate("127.0.0.1", servers[mode][0], "/bench", args.seconds)
                rates[mode].append(value)
        ratios = [m / b for b, m in zip(rates["bare"], rates["mira"], strict=True)]
        lines = os.path.getsize(os.path.join(tmp, "mira.log"))
        print(
            f"load: {tool}, {args.seconds}s x {args.rounds} alternating rounds, cheroot 8 threads"
        )
        print(f"bare Flask   req/s per round: {', '.join(f'{r:,.0f}' for r in rates['bare'])}")
        print(f"Mira path    req/s per round: {', '.join(f'{r:,.0f}' for r in rates['mira'])}")
        print(
            f"median: bare {statistics.median(rates['bare']):,.0f} req/s, "
            f"mira {statistics.median(rates['mira']):,.0f} req/s, "
            f"ratio {statistics.median(ratios):.3f} (goal >= 0.90); access log {lines:,} bytes"
        )
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(10)


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        time.sleep(0.05)
        return False


if __name__ == "__main__":
    main()
