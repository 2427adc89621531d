"""What a microsecond of the app's Python costs in server CPU over HTTP.

Mira's request path (correlation id, access line, metrics, header checks) is Python around
the same Flask app that bare Flask runs. Measured in one process it adds some microseconds
per request; served over HTTP under load it costs more. This benchmark measures that factor
on this machine, in one run, for three kinds of extra Python in front of bare Flask:

- `busy`: a spin on the clock (Python that touches almost no memory);
- `alloc`: building a dict of lists and dicts, to JSON and back (allocates like a request path);
- `mira`: Mira's own app (`apps:mira`, its whole request path).

Each is first timed in this process (best of several rounds, against bare Flask in the same
rounds), then served by granian's own CLI (same threads, same worker count), loaded with wrk
in alternating rounds; CPU is user+system of the server's process tree, from /proc. The
factor printed is (added CPU per request over HTTP) / (added time per request in process).

Run: `.venv/bin/python benchmarks/python_cost.py [--workers N --rounds R --seconds S
--threads T --busy-us U --alloc-n N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from werkzeug.test import create_environ

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve import (
    Engine,
    Server,
    free_port,
    granian_argv,
    load_round,
    mira_config,
    scratch,
    wrk_script,
)

VARIANTS = ("bare", "busy", "alloc", "mira")


def _environ() -> dict[str, Any]:
    """A GET /health as wrk sends it."""
    return create_environ(
        "/health",
        "http://127.0.0.1:5000/",
        headers={"User-Agent": "wrk", "Accept": "*/*"},
        environ_overrides={"REMOTE_ADDR": "127.0.0.1"},
    )


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def in_process(
    apps: dict[str, Callable[..., Any]], rounds: int = 15, n: int = 3000
) -> dict[str, float]:
    """Microseconds per GET /health of each app, best round; the apps take turns in each."""
    best = {name: float("inf") for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            environs = [_environ() for _ in range(n)]
            started = time.perf_counter()
            for environ in environs:
                b"".join(app(environ, _start_response))
            best[name] = min(best[name], (time.perf_counter() - started) / n * 1e6)
    return best


def show(title: str, local: dict[str, float]) -> None:
    print(title)
    for name in VARIANTS:
        print(f"  {name:<6} {local[name]:7.1f} us   added {local[name] - local['bare']:6.1f} us")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="granian's blocking threads")
    parser.add_argument("--busy-us", type=float, default=24.0)
    parser.add_argument("--alloc-n", type=int, default=20)
    args = parser.parse_args()

    tmp = scratch()
    config = mira_config(tmp, 0, 1)
    os.environ.update(
        MIRA_BENCH_CONFIG=str(config),
        MIRA_SECRETS_BACKEND="env",
        MIRA_BENCH_BUSY_US=str(args.busy_us),
        MIRA_BENCH_ALLOC_N=str(args.alloc_n),
    )
    import apps

    local = in_process({name: getattr(apps, name) for name in VARIANTS})
    show("In this process (GET /health, best of 15 rounds of 3,000), before the load:", local)

    extra = ["--blocking-threads", str(args.threads)] if args.threads else []
    servers: dict[str, Server] = {}
    try:
        for name in VARIANTS:
            port = free_port()
            argv = granian_argv(name, port, args.workers, *extra)
            server = Server(Engine(name, argv), port, tmp / f"{name}.out")
            servers[name] = server
            if not server.wait_up():
                print((tmp / f"{name}.out").read_text(errors="replace")[-2000:])
                return 1
        lua = wrk_script(tmp)
        for server in servers.values():
            load_round(server, "GET /health", 1, args.connections, lua)  # warm up
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for i in range(args.rounds):
            order = list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                result = load_round(
                    servers[name], "GET /health", args.seconds, args.connections, lua
                )
                cpu[name].append(result.us_per_request)
    finally:
        for server in servers.values():
            server.stop()

    # timed again once the servers are gone: the machine is shared, the best of both stands
    again = in_process({name: getattr(apps, name) for name in VARIANTS})
    local = {name: min(local[name], again[name]) for name in VARIANTS}
    show("In this process, best of both passes (before and after the load):", local)

    threads = args.threads or "granian's default"
    print(
        f"\nOver HTTP (granian WSGI, workers {args.workers}, blocking threads {threads}, "
        f"wrk -t2 -c{args.connections}, {args.rounds} x {args.seconds} s alternating, medians):"
    )
    base = statistics.median(cpu["bare"])
    print(f"  {'app':<6} {'CPU us/req':>10} {'added':>7} {'in-process added':>17} {'factor':>7}")
    for name in VARIANTS:
        median = statistics.median(cpu[name])
        added_local = local[name] - local["bare"]
        factor = (median - base) / added_local if name != "bare" and added_local > 0 else None
        shown = f"{factor:6.2f}x" if factor is not None else "      -"
        print(f"  {name:<6} {median:10.0f} {median - base:7.0f} {added_local:17.1f} {shown}")
        print(f"         rounds: {' '.join(f'{v:.0f}' for v in cpu[name])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
