"""The serving-layer criteria of issue 12, checked against each engine on 127.0.0.1.

Engines (one worker each): `mira` is the real service (cheroot); the others host Mira's own
app object (`apps:mira`, so Flask's max body applies and Mira's middleware adds X-Request-ID)
on gunicorn sync, gunicorn gthread (32 threads) and granian WSGI. Checks: request framing
(CL+TE, two Content-Length), a chunked body over 1 MiB, header block and count limits, the
engine's own error answers, /health from a fresh connection while 200 clients sit idle or
trickle a byte a second, and how long an idle, header-trickling or body-trickling connection
is kept. Every wait is bounded. Run: `.venv/bin/python benchmarks/spikes/attack.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _serve import HERE, Engine, Server, free_port, mira_config, scratch

HOLD = 40.0  # longest we wait for a server to drop a slow connection
CLIENTS = 200
MSG = "/api/v1/messages"


def argv(name: str, port: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    bin_dir = Path(sys.executable).parent
    env = {"MIRA_BENCH_CONFIG": str(mira_config(tmp, 0, 1))}
    gunicorn = [str(bin_dir / "gunicorn"), "--chdir", str(HERE), "-w", "1"]
    gunicorn += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    granian = [str(bin_dir / "granian"), "--interface", "wsgi", "--workers", "1"]
    granian += ["--host", "127.0.0.1", "--port", str(port), "--working-dir", str(HERE)]
    granian += ["--log-level", "warning"]
    return {
        "mira": (
            [sys.executable, "-m", "mira.entrypoints.web", str(mira_config(tmp, port, 1))],
            {},
        ),
        "gunicorn-sync": ([*gunicorn, "apps:mira"], env),
        "gunicorn-gthread": ([*gunicorn, "-k", "gthread", "--threads", "32", "apps:mira"], env),
        "granian": ([*granian, "apps:mira"], env),
    }[name]


def exchange(port: int, data: bytes, timeout: float = 3.0) -> tuple[list[str], str, bytes]:
    """Send raw bytes; return (status codes seen, how it ended, everything received)."""
    got = b""
    end = "open"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError as exc:
            end = f"send failed ({type(exc).__name__})"
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    end = "closed"
                    break
                got += chunk
        except TimeoutError:
            end = "open"
        except ConnectionResetError:
            end = "reset"
    return re.findall(r"HTTP/1\.[01] (\d{3})", got.decode("latin-1")), end, got


def head(raw: bytes) -> str:
    """Status, Content-Type, X-Request-ID presence, Allow, and the body's start."""
    text = raw.decode("latin-1")
    top, _, body = text.partition("\r\n\r\n")
    lines = top.split("\r\n")
    fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    parts = [lines[0].replace("HTTP/1.1 ", "").replace("HTTP/1.0 ", "") if lines else "-"]
    parts.append(f"type={fields.get('content-type', '-')}")
    parts.append("X-Request-ID" if "x-request-id" in fields else "no X-Request-ID")
    if "allow" in fields:
        parts.append(f"Allow={fields['allow']}")
    parts.append(repr(body[:60]))
    return ", ".join(parts)


def framing(port: int) -> dict[str, str]:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    cl_te = (
        f"POST {MSG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ).encode() + smuggled
    two_cl = (
        f"POST {MSG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 2\r\nContent-Length: {2 + len(smuggled)}\r\n\r\n{{}}"
    ).encode() + smuggled
    out = {}
    for label, data in (("CL+TE", cl_te), ("two Content-Length", two_cl)):
        codes, end, _ = exchange(port, data)
        out[label] = f"statuses {codes}, connection {end}"
    return out


def chunked_over_limit(port: int) -> str:
    """2 MiB chunked, then a second request on the same connection."""
    chunk = b"x" * 65536
    body = b"".join(b"10000\r\n" + chunk + b"\r\n" for _ in range(32)) + b"0\r\n\r\n"
    data = (
        f"POST {MSG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + body
    data += b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    codes, end, raw = exchange(port, data, timeout=5)
    return f"statuses {codes}, connection {end}; first: {head(raw) if raw else '-'}"


def header_limits(port: int) -> dict[str, str]:
    base = "GET /health HTTP/1.1\r\nHost: x\r\n"
    cases = {
        "one 70 KiB header": base + "X-Big: " + "a" * 70_000 + "\r\n\r\n",
        "4 x 1 MiB headers": base + "".join(f"X-{i}: {'a' * 1_048_576}\r\n" for i in range(4)),
        "101 headers": base + "".join(f"X-H{i}: v\r\n" for i in range(101)) + "\r\n",
        "1000 headers": base + "".join(f"X-H{i}: v\r\n" for i in range(1000)) + "\r\n",
    }
    cases["4 x 1 MiB headers"] += "\r\n"
    out = {}
    for label, text in cases.items():
        codes, end, _ = exchange(port, text.encode(), timeout=5)
        out[label] = f"statuses {codes}, connection {end}"
    return out


def own_errors(port: int) -> dict[str, str]:
    cases = {
        "garbage request line": b"GARBAGE\r\n\r\n",
        "HTTP/9.9": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
        "bad chunk size": (
            f"POST {MSG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n"
        ).encode(),
        "DELETE /health (405)": b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    }
    out = {}
    for label, data in cases.items():
        _, end, raw = exchange(port, data)
        out[label] = (head(raw) if raw else "no answer") + f"; connection {end}"
    return out


def fresh_health(port: int, tries: int = 3, timeout: float = 3.0) -> str:
    worst = 0.0
    for _ in range(tries):
        start = time.monotonic()
        codes, _, _ = exchange(
            port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout
        )
        took = time.monotonic() - start
        if codes != ["200"]:
            return f"no answer within {timeout:.0f} s"
        worst = max(worst, took)
    return f"answered, slowest of {tries} in {worst * 1000:.0f} ms"


def crowd(port: int, trickle: bool, seconds: float = 4.0) -> str:
    """CLIENTS connections that send nothing (or a header byte a second), then /health."""
    socks: list[socket.socket] = []
    try:
        for _ in range(CLIENTS):
            with contextlib.suppress(OSError):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        stop = threading.Event()
        feeder = None
        if trickle:
            feeder = threading.Thread(target=_trickle, args=(socks, stop), daemon=True)
            feeder.start()
        time.sleep(1.5)
        result = fresh_health(port)
        time.sleep(max(0.0, seconds - 1.5))
        stop.set()
        if feeder:
            feeder.join(3)
        return f"{len(socks)} connected; fresh /health: {result}"
    finally:
        for s in socks:
            s.close()


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    line = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100
    for i in range(len(line)):
        if stop.wait(1.0 if i else 0.0):
            return
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(line[i : i + 1])


def held_for(port: int, first: bytes, drip: bytes | None) -> str:
    """How long the server keeps a connection that sent `first`, then `drip` once a second."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(first)
        while time.monotonic() - start < HOLD:
            try:
                if sock.recv(4096) == b"":
                    return f"closed after {time.monotonic() - start:.1f} s"
                return f"answered after {time.monotonic() - start:.1f} s"
            except TimeoutError:
                pass
            except ConnectionResetError:
                return f"reset after {time.monotonic() - start:.1f} s"
            if drip is not None:
                try:
                    sock.send(drip)
                except OSError:
                    return f"closed after {time.monotonic() - start:.1f} s (send failed)"
    return f"still open after {HOLD:.0f} s"


def timeouts(port: int) -> dict[str, str]:
    cases: dict[str, tuple[bytes, bytes | None]] = {
        "idle connection": (b"", None),
        "headers a byte a second": (b"GET /health HTTP/1.1\r\nX-Slow: ", b"a"),
        "body a byte a second": (
            f"POST {MSG} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode(),
            b" ",
        ),
    }
    out: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda k=k, v=v: out.__setitem__(k, held_for(port, *v)))
        for k, v in cases.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HOLD + 5)
    return out


def run(name: str, tmp: Path) -> None:
    port = free_port()
    cmd, env = argv(name, port, tmp)
    server = Server(Engine(name, cmd, env), port, tmp / f"{name}.out")
    try:
        if not server.wait_up():
            print(f"{name}: did not start")
            return
        print(f"== {name}", flush=True)
        checks: list[tuple[str, Callable[[], object]]] = [
            ("framing", lambda: framing(port)),
            ("chunked 2 MiB body (limit 1 MiB)", lambda: chunked_over_limit(port)),
            ("header limits", lambda: header_limits(port)),
            ("engine's own answers", lambda: own_errors(port)),
            (f"{CLIENTS} idle clients", lambda: crowd(port, trickle=False)),
            (f"{CLIENTS} byte-a-second clients", lambda: crowd(port, trickle=True)),
            ("slow connections kept", lambda: timeouts(port)),
        ]
        for label, check in checks:
            time.sleep(0.5)
            try:
                result = check()
            except OSError as exc:
                result = f"{type(exc).__name__}: {exc}"
            if isinstance(result, dict):
                for k, v in result.items():
                    print(f"  {label} / {k}: {v}", flush=True)
            else:
                print(f"  {label}: {result}", flush=True)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", default="mira,gunicorn-sync,gunicorn-gthread,granian")
    args = parser.parse_args()
    tmp = scratch()
    for name in args.engines.split(","):
        run(name, tmp)


if __name__ == "__main__":
    main()
