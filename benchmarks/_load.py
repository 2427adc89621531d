"""Load generation shared by the benchmarks: wrk when installed, else bounded Python clients."""

from __future__ import annotations

import http.client
import multiprocessing as mp
import re
import shutil
import subprocess
import time


def wrk_rate(url: str, seconds: int, connections: int = 32, threads: int = 2) -> float:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk gave no rate:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses")
    return float(match.group(1))


def _client(
    host: str, port: int, path: str, deadline: float, max_requests: int, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    done = 0
    while done < max_requests and time.monotonic() < deadline:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        done += 1
    out.put(done)


def python_rate(
    host: str, port: int, path: str, seconds: int, clients: int = 8, max_requests: int = 200_000
) -> float:
    """Bounded in count and time: each client stops at max_requests or the deadline."""
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start = time.monotonic()
    deadline = start + seconds
    procs = [
        mp.Process(target=_client, args=(host, port, path, deadline, max_requests, queue))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=seconds + 30) for _ in procs)
    for p in procs:
        p.join(10)
    return total / (time.monotonic() - start)


def rate(host: str, port: int, path: str, seconds: int) -> tuple[float, str]:
    if shutil.which("wrk"):
        return wrk_rate(f"http://{host}:{port}{path}", seconds), "wrk -t2 -c32"
    return python_rate(host, port, path, seconds), "python clients x8"
