"""At a graceful stop, are connections already queued served, refused or reset? And new ones?

For each engine (one worker, bare Flask from benchmarks/apps.py): occupy the worker with a
GET /slow?s=2, queue 20 more connections that each sent GET /health, send SIGTERM to the
server process, then try 5 new connections. Prints what each queued connection got (200,
reset, closed without an answer, timeout) and whether new connections were refused.
Run: `.venv/bin/python benchmarks/spikes/queued_close.py [--engines cheroot,gunicorn,...]`.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _serve import HERE, Engine, Server, free_port, granian_argv, scratch

QUEUED = 20
NEW = 5


def argv(name: str, port: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    granian = _granian(port)
    common = ["-b", f"127.0.0.1:{port}", "--chdir", str(HERE), "-w", "1", "--log-level", "warning"]
    return {
        "cheroot": [
            sys.executable,
            str(HERE / "spikes" / "cheroot_host.py"),
            "--port",
            str(port),
            "--threads",
            "1",
        ],
        "gunicorn-sync": [str(bin_dir / "gunicorn"), *common, "apps:slow"],
        "gunicorn-gthread": [
            str(bin_dir / "gunicorn"),
            *common,
            "-k",
            "gthread",
            "--threads",
            "1",
            "apps:slow",
        ],
        "granian": granian,
        # at most 2 connections accepted at once: the rest wait in the kernel's backlog
        "granian-backpressure-2": [*granian[:-1], "--backpressure", "2", "apps:slow"],
    }[name]


def _granian(port: int) -> list[str]:
    return granian_argv("slow", port, 1, "--blocking-threads", "1")


def request(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def outcome(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return "reset" if not data else f"reset after {data[:12]!r}"
    except TimeoutError:
        return "timeout" if not data else f"timeout after {data[:12]!r}"
    finally:
        sock.close()
    if not data:
        return "closed, no answer"
    return data.split(b"\r\n", 1)[0].decode(errors="replace").replace("HTTP/1.1 ", "")


def connect_new(port: int) -> str:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "connect timeout"
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    except OSError as exc:
        sock.close()
        return f"accepted, send failed ({type(exc).__name__})"
    return "accepted: " + outcome(sock, 3)


def run(name: str, tmp: Path) -> None:
    port = free_port()
    server = Server(Engine(name, argv(name, port)), port, tmp / f"{name}.out")
    try:
        if not server.wait_up():
            print(f"{name}: did not start")
            return
        busy = request(port, "/slow?s=2")
        time.sleep(0.3)
        queued = [request(port, "/health") for _ in range(QUEUED)]
        time.sleep(0.2)
        os.kill(server.proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        new = collections.Counter(connect_new(port) for _ in range(NEW))
        got = collections.Counter(outcome(s, 8) for s in queued)
        in_flight = outcome(busy, 8)
        try:
            code: int | str = server.proc.wait(15)
        except Exception:
            code = "still running after 15 s"
        print(f"{name}:")
        print(f"  in-flight /slow: {in_flight}")
        print(f"  {QUEUED} queued /health: {dict(got)}")
        print(f"  {NEW} new connections after SIGTERM: {dict(new)}")
        print(f"  exit: {code}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--engines", default="cheroot,gunicorn-sync,gunicorn-gthread,granian,granian-backpressure-2"
    )
    args = parser.parse_args()
    tmp = scratch()
    for name in args.engines.split(","):
        run(name, tmp)


if __name__ == "__main__":
    main()
