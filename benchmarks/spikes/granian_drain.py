"""Can Mira own the drain order on granian through its public Python API?

The host (`--host-port P`) runs `granian.server.Server` (WSGI, 1 worker, apps:slow) with an
`on_startup` hook that takes SIGTERM over in the main process: on SIGTERM it waits
--drain-delay while the worker still serves, then calls the server's
`signal_handler_interrupt()` (granian's own stop: workers stop accepting and finish their
connections within `workers_kill_timeout`), and `on_shutdown` runs Mira's hooks.
The driver starts the host, keeps a GET /slow?s=3 in flight, sends SIGTERM (to the main PID,
then to the whole process group, then to the group with a worker that moved itself into
its own process group while loading the app) and prints what new connections got during
and after the delay, and what the in-flight request got.
Run: `.venv/bin/python benchmarks/spikes/granian_drain.py`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _serve import Engine, Server, free_port, scratch

DELAY = 2.0


def host(port: int, target: str) -> None:
    from granian.constants import Interfaces
    from granian.server import Server as Granian

    server: Any = Granian(
        target,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.WSGI,
        workers=1,
        workers_kill_timeout=5,
    )

    def take_signals() -> None:
        def on_stop(signum: int, frame: object) -> None:
            print(f"host: signal {signum}, serving {DELAY} s more (drain_delay)", flush=True)
            threading.Timer(DELAY, server.signal_handler_interrupt).start()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)

    server.on_startup(take_signals)
    server.on_shutdown(lambda: print("host: on_shutdown hooks ran", flush=True))
    server.serve()


def get(port: int, path: str, timeout: float = 5.0) -> str:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        try:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = sock.recv(200)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "timeout"
    return data.split(b"\r\n", 1)[0].decode() if data else "closed, no answer"


def drive(to_group: bool, tmp: Path, target: str = "apps:slow") -> None:
    port = free_port()
    argv = [sys.executable, __file__, "--host-port", str(port), "--target", target]
    server = Server(Engine("granian-host", argv), port, tmp / f"host-{to_group}.out")
    try:
        if not server.wait_up():
            print("host did not start:", (tmp / f"host-{to_group}.out").read_text()[-1500:])
            return
        slow: dict[str, str] = {}
        t = threading.Thread(target=lambda: slow.update(r=get(port, "/slow?s=3", 8)))
        t.start()
        time.sleep(0.3)
        start = time.monotonic()
        if to_group:
            os.killpg(server.proc.pid, signal.SIGTERM)  # the group we created
        else:
            os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        during = get(port, "/health")
        time.sleep(DELAY + 0.5 - (time.monotonic() - start))
        after = get(port, "/health")
        t.join(10)
        code = server.proc.wait(15)
        target = "the process group" if to_group else "the main PID"
        print(f"SIGTERM to {target}, app {argv[-1]}:")
        print(f"  new /health 0.5 s after (inside drain_delay {DELAY} s): {during}")
        print(f"  new /health {DELAY + 0.5} s after: {after}")
        print(f"  in-flight /slow?s=3: {slow.get('r')}; exit {code}")
        out = (tmp / f"host-{to_group}.out").read_text()
        print("  host said: " + " | ".join(x for x in out.splitlines() if x.startswith("host:")))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host-port", type=int)
    parser.add_argument("--target", default="apps:slow")
    args = parser.parse_args()
    if args.host_port:
        host(args.host_port, args.target)
        return
    tmp = scratch()
    drive(False, tmp)
    drive(True, tmp)
    drive(True, tmp, "apps:slow_own_group")  # the worker left the group at load


if __name__ == "__main__":
    main()
