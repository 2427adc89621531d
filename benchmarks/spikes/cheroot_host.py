"""Bare Flask (benchmarks/apps.py) on Mira's cheroot adapter, with Mira's drain on SIGTERM.

SIGTERM: start_draining, --drain-delay seconds still serving, close_listener (refuse new
SYNs, accept and serve the backlog), wait_drained, stop. Used by the benchmark as the
"bare Flask, cheroot" peer and by queued_close.py. Run: cheroot_host.py --port P.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps import create_bare
from cheroot_server import CherootServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--drain-delay", type=float, default=0.0)
    args = parser.parse_args()
    server = CherootServer(create_bare(), host="127.0.0.1", port=args.port, threads=args.threads)
    server.bind()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    stop.wait()
    server.start_draining()
    time.sleep(args.drain_delay)
    server.close_listener()
    left = server.wait_drained(10.0)
    server.stop(timeout=1.0)
    print(f"drained, {left} left", flush=True)


if __name__ == "__main__":
    main()
