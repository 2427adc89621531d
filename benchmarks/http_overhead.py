"""Server CPU per request and req/s: the real Mira service against bare Flask on its peers.

Measures what users run: `python -m mira.entrypoints.web config.json` (JSON log file, INFO)
and, in the same run with alternating rounds, bare Flask serving the same two endpoints
(GET /health, POST /api/v1/messages generate_plan calling Mira's own plan function) on
gunicorn sync and granian WSGI with the same worker count. CPU is user+system of each
server's whole process tree during the round, from /proc. The machine is shared: decide on
the medians of CPU per request, which move far less than req/s.

Run: `.venv/bin/python benchmarks/http_overhead.py [--workers N --rounds R --seconds S
--connections C --engines mira,bare-gunicorn,bare-granian,bare-cheroot,mira-gunicorn,...]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve import ENDPOINTS, Round, Server, engines, load_round, scratch, wrk_script

DEFAULT = "mira,mira-32,bare-gunicorn,bare-granian,bare-granian-32"
LABELS = {
    "mira": "Mira (service)",
    "mira-32": "Mira, max_threads 32",
    "bare-gunicorn": "bare Flask, gunicorn sync",
    "bare-granian": "bare Flask, granian WSGI",
    "bare-granian-32": "bare Flask, granian 32 thr",
    "bare-cheroot": "bare Flask, cheroot 32 thr",
    "mira-gunicorn": "Mira app, gunicorn sync",
    "mira-granian": "Mira app, granian WSGI",
}
GOALS = {"bare-gunicorn": 1.0, "bare-granian": 1.15}
#: the shipped service, as started by users (with its defaults, and with max_threads 32)
SERVICES = ("mira", "mira-32")


def start(names: list[str], workers: int, tmp: Path) -> dict[str, Server]:
    ports: dict[str, int] = {}
    known = engines(workers, tmp, ports)
    servers: dict[str, Server] = {}
    for name in names:
        server = Server(known[name], ports[name], tmp / f"{name}.out")
        if server.wait_up():
            servers[name] = server
            continue
        server.stop()
        out = (tmp / f"{name}.out").read_text(errors="replace")
        if name == "mira" and workers > 1 and "workers" in out:
            print(f"Mira with {workers} workers is not available yet (server.workers rejected)")
        else:
            print(f"{name} did not start:\n{out[-2000:]}")
    return servers


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--engines", default=DEFAULT)
    args = parser.parse_args()
    if args.workers < 1 or args.rounds < 1 or not 1 <= args.seconds <= 60:
        parser.error("--workers and --rounds must be >= 1, --seconds within 1..60")
    tmp = scratch()
    names = [n for n in args.engines.split(",") if n]
    unknown = set(names) - set(LABELS)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; known: {', '.join(LABELS)}")
    servers = start(names, args.workers, tmp)
    results: dict[tuple[str, str], list[Round]] = {}
    try:
        lua = wrk_script(tmp)
        for server in servers.values():  # warm up: imports, first requests, JIT-free caches
            for endpoint in ENDPOINTS:
                load_round(server, endpoint, 1, args.connections, lua)
        for i in range(args.rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for endpoint in ENDPOINTS:
                for name in order:
                    got = load_round(servers[name], endpoint, args.seconds, args.connections, lua)
                    results.setdefault((name, endpoint), []).append(got)
    finally:
        for server in servers.values():
            server.stop()
    report(results, list(servers), args)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(results: dict[tuple[str, str], list[Round]], names: list[str], args: object) -> None:
    a = vars(args)
    print(
        f"wrk -t2 -c{a['connections']}, {a['seconds']} s x {a['rounds']} alternating rounds, "
        f"workers {a['workers']}; medians (2 shared cores: expect +-15 % between runs)"
    )
    print(f"{'engine':<28} {'endpoint':<20} {'req/s':>8} {'CPU us/req':>11}  per round us/req")
    for name in names:
        for endpoint in ENDPOINTS:
            rounds = results[(name, endpoint)]
            rps = statistics.median(r.rps for r in rounds)
            us = statistics.median(r.us_per_request for r in rounds)
            each = " ".join(f"{r.us_per_request:.0f}" for r in rounds)
            print(f"{LABELS[name]:<28} {endpoint:<20} {rps:>8,.0f} {us:>11.0f}  {each}")
    for own in SERVICES:
        if own in names:
            ratios_of(results, names, own)


def ratios_of(results: dict[tuple[str, str], list[Round]], names: list[str], own: str) -> None:
    """Mira's (`own`) CPU per request over each peer's, round by round, median."""
    for endpoint in ENDPOINTS:
        mira = results[(own, endpoint)]
        for peer in names:
            if peer in SERVICES:  # Mira's app on another engine is a peer too
                continue
            ratios = [
                m.us_per_request / p.us_per_request
                for m, p in zip(mira, results[(peer, endpoint)], strict=True)
            ]
            goal = f" (goal <= {GOALS[peer]:.2f})" if peer in GOALS else ""
            print(
                f"{LABELS[own]} / {LABELS[peer]:<27} {endpoint:<20} CPU per request "
                f"{statistics.median(ratios):.2f}x{goal}"
            )


if __name__ == "__main__":
    sys.exit(main())
