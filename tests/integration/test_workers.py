"""`server.workers` N: one supervisor, N worker processes on one address, one lifecycle.

Real processes, real signals, real HTTP over loopback, a real OpenBao for the rotation.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.fake_github import FakeGithub
from tests.integration.integrations_support import plan_input, publish
from tests.integration.openbao_server import VaultServer, openbao  # noqa: F401
from tests.integration.test_hot_reload import atomic_save, base_config
from tests.load import LoadResult, stop_under_load
from tests.support import ServiceProcess, http, wait_until

DEADLINE = 20.0
PLAN = {
    "type": "generate_plan",
    "data": {"name": "Launch", "description": "Go", "goals": ["MVP"], "duration_weeks": 4},
}


def start(
    services: list[ServiceProcess], workdir: Path, workers: int, **sections: Any
) -> ServiceProcess:
    config = base_config(0, **sections)
    config["server"] = {"host": "127.0.0.1", "workers": workers, **sections.get("server", {})}
    svc = ServiceProcess(workdir, config)
    services.append(svc)
    svc.start()
    wait_until(lambda: len(worker_pids(svc)) == workers, DEADLINE, message=f"{workers} workers")
    svc.worker_pids = worker_pids(svc)  # type: ignore[attr-defined]
    return svc


def worker_pids(svc: ServiceProcess) -> list[int]:
    """The supervisor's child processes (a replacement is the child of the thread that started
    it, so every thread's children count)."""
    assert svc.proc is not None
    pids: list[int] = []
    for children in Path(f"/proc/{svc.proc.pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            continue
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def served(svc: ServiceProcess, path: str = "/api/v1/messages") -> list[dict[str, Any]]:
    return [x for x in svc.find("Request handled") if x["path"] == path]


def every_worker_serves(svc: ServiceProcess, workers: int, since: int = 0) -> list[dict[str, Any]]:
    """Parallel plan requests on fresh connections until each worker index has answered one
    (the kernel decides which worker accepts); the access lines from `since` on."""

    def batch() -> bool:
        threads = [
            threading.Thread(target=lambda: svc.post("/api/v1/messages", PLAN)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return {x["worker"] for x in served(svc)[since:]} == set(range(workers))

    wait_until(batch, DEADLINE, interval=0.0, message=f"all {workers} workers answering")
    return served(svc)[since:]


def test_n_workers_serve_one_address_and_every_request_line_names_its_worker(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, 2)
    lines = every_worker_serves(svc, 2)
    assert {x["config_generation"] for x in lines} == {1}
    processing = svc.find("Processing message")  # every line of the request, not only one
    assert processing and all("worker" in x and "config_generation" in x for x in processing)


def fetch_on_fresh_connections(svc: ServiceProcess, count: int) -> list[str]:
    """`count` connections opened at once, one request each; what each got (or its error).
    /openapi.json, since its access line is at INFO (the probes' are at DEBUG)."""
    outcomes = []
    conns = [socket.create_connection(("127.0.0.1", svc.port), timeout=5) for _ in range(count)]
    try:
        for conn in conns:
            conn.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for conn in conns:
            try:
                outcomes.append(conn.recv(64).split(b"\r\n", 1)[0].decode())
            except OSError as exc:  # a reset, or nothing within the timeout
                outcomes.append(type(exc).__name__)
    finally:
        for conn in conns:
            conn.close()
    return outcomes


def access_lines(svc: ServiceProcess, path: str, since: int, count: int) -> list[dict[str, Any]]:
    """The `count` access lines for `path` from line `since` on, once all are written."""

    def written() -> list[dict[str, Any]] | None:
        lines = served(svc, path)[since:]
        return lines if len(lines) >= count else None

    result: list[dict[str, Any]] = wait_until(written, DEADLINE, message=f"{count} access lines")
    return result


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """32 connections opened at once, as a client's connection pool does, each then sending
    one request: every worker gets a share (each has a socket of its own on the address; with
    one shared socket the first worker awake took 26 or all 32 of them)."""
    svc = start(services, tmp_path, 2)
    since = len(served(svc, "/openapi.json"))
    assert fetch_on_fresh_connections(svc, 32) == ["HTTP/1.1 200 OK"] * 32
    lines = access_lines(svc, "/openapi.json", since, 32)
    shares = Counter(x["worker"] for x in lines)
    # by a hash of each client port: fewer than 4 of 32 on one of two has odds of ~1e-6
    assert min(shares[0], shares[1]) >= 4, shares


def test_on_the_ipv6_wildcard_every_worker_takes_ipv6_and_ipv4_clients(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """server.host "::" (an IPv6 or dual-stack cluster): each worker's socket takes IPv6 and
    IPv4 connections alike, and SIGTERM drains and closes the address for both."""
    svc = start(services, tmp_path, 2, server={"host": "::"})
    since = len(served(svc, "/openapi.json"))
    families = {"[::1]": "v6", "127.0.0.1": "v4"}
    pairs: set[tuple[int, str]] = set()  # (worker, family) seen so far
    sent = 0
    # the kernel picks the worker per connection (SO_REUSEPORT): fresh connections until each
    # worker has answered both families, at most 100 per family (1 in 2^50 to miss by chance)
    while len(pairs) < 4 and sent < 200:
        for host, family in families.items():
            rid = f"{family}-{sent}"
            status, headers, _ = http(
                "GET", f"http://{host}:{svc.port}/openapi.json", headers={"X-Request-ID": rid}
            )
            assert status == 200 and headers["X-Request-ID"] == rid
            sent += 1
        lines = access_lines(svc, "/openapi.json", since, sent)
        pairs = {(x["worker"], x["correlation_id"].split("-")[0]) for x in lines}
    assert pairs == {(0, "v4"), (0, "v6"), (1, "v4"), (1, "v6")}
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(DEADLINE) == 0
    for family, address in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
        with socket.socket(family) as probe, pytest.raises(ConnectionRefusedError):
            probe.connect((address, svc.port))


@pytest.mark.parametrize("workers", [2, 4])
def test_a_reload_reaches_every_worker_and_no_worker_serves_the_old_one_after_it(
    tmp_path: Path, services: list[ServiceProcess], workers: int
) -> None:
    svc = start(services, tmp_path, workers)
    seen: list[tuple[float, float, int]] = []  # (sent, answered, generation)
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            status, _, body = http("GET", svc.url + "/ready", timeout=5)
            if status == 200:
                seen.append((sent, time.monotonic(), json.loads(body)["config"]["generation"]))

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        config = base_config(1)
        config["server"] = {"host": "127.0.0.1", "port": svc.port, "workers": workers}
        atomic_save(svc.config_path, json.dumps(config))
        wait_until(
            lambda: svc.find("Configuration reloaded successfully"), DEADLINE, message="the line"
        )
        (done,) = svc.find("Configuration reloaded successfully")  # once, by the supervisor
        assert done["generation"] == 2 and "worker" not in done
        after = len(seen)
        wait_until(lambda: len(seen) >= after + 40, DEADLINE, message="requests after the line")
    finally:
        stop.set()
        for client in clients:
            client.join(35)
    # Once any worker answered generation 2, no request sent after that got 1 from any worker.
    first_new = min(answered for _, answered, generation in seen if generation == 2)
    late_old = [(s, g) for s, _, g in seen if s > first_new and g == 1]
    assert late_old == [], f"{len(late_old)} requests sent after the switch got generation 1"
    assert {g for _, _, g in seen[after:]} == {2}
    lines = every_worker_serves(svc, workers, since=len(served(svc)))
    assert {x["config_generation"] for x in lines} == {2}  # every worker serves the new one


def test_a_rotation_reaches_every_worker(
    openbao: VaultServer,  # noqa: F811
    tmp_path: Path,
    services: list[ServiceProcess],
) -> None:
    old, new = "ghp_worker_rotation_old_1", "ghp_worker_rotation_new_2"
    kv = openbao.client.secrets.kv.v2
    kv.create_or_update_secret("github-credentials", secret={"token": old})
    with FakeGithub({old, new}, repositories=("acme/one",)) as github:
        secrets = {
            "backend": "vault",
            "auto_refresh": True,
            "refresh_interval": 0.3,
            "vault": {"url": openbao.url, "token": openbao.root_token, "timeout": 2},
        }
        gh = {"enabled": True, "token": "secret://github-credentials:token"}
        gh["base_url"] = github.base_url
        svc = start(services, tmp_path, 2, secrets=secrets, integrations={"github": gh})
        message = publish("github", "acme/one", plan_input("Launch", ["MVP"]))
        assert svc.post("/api/v1/messages", message)[0] == 200
        kv.create_or_update_secret("github-credentials", secret={"token": new})
        wait_until(lambda: svc.find("SecretRotated"), DEADLINE, message="the rotation")
        wait_until(
            lambda: github.calls and github.calls[-1].headers.get("Authorization") != "",
            DEADLINE,
        )
        github.set_tokens({new})  # from now on the old token is refused upstream
        for _ in range(20):
            status, _, body = svc.post("/api/v1/messages", message)
            assert status == 200, body
        since = len(served(svc))
        every_worker_serves(svc, 2, since=since)
        after = [c for c in github.calls[-20:]]
        assert all(c.headers.get("Authorization") == f"Bearer {new}" for c in after)
        log = svc.log_path.read_bytes() + svc.err_path.read_bytes()
        assert old.encode() not in log and new.encode() not in log


def loaded_stop(svc: ServiceProcess, stop_with: Any, clients: int = 6) -> LoadResult:
    """Keep-alive clients sending plan requests while `stop_with()` stops the service."""

    def stop() -> None:
        stop_with()
        assert svc.wait_exit(DEADLINE) == 0, svc.stderr()

    return stop_under_load(svc.port, json.dumps(PLAN), stop, clients=clients, requests=200)


def test_sigterm_under_load_with_two_workers_fails_no_accepted_request(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    for round_ in range(10):
        workdir = tmp_path / f"round{round_}"
        workdir.mkdir()
        svc = start(services, workdir, 2, shutdown={"drain_delay": 0.2, "timeout": 10})
        result = loaded_stop(svc, lambda: svc.signal(signal.SIGTERM))  # noqa: B023
        assert result.failures == [], f"round {round_}: {result.failures[:5]}"
        assert result.ok >= 40, f"round {round_}: {result}"
        assert svc.find("Drained") and not any(_alive(p) for p in svc.worker_pids)  # type: ignore[attr-defined]


def test_sigterm_to_the_whole_process_group_still_drains(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    config = base_config(0, shutdown={"drain_delay": 0.5, "timeout": 10})
    config["server"] = {"host": "127.0.0.1", "workers": 2}
    svc = ServiceProcess(tmp_path, config)
    services.append(svc)
    svc.proc = subprocess.Popen(
        [os.sys.executable, "-m", svc.module, str(svc.config_path)],  # type: ignore[attr-defined]
        cwd=svc.workdir,
        env=svc.env,
        stdout=svc.log_path.open("wb"),
        stderr=svc.err_path.open("wb"),
        start_new_session=True,
    )
    wait_until(svc._ready, DEADLINE, message="ready")
    wait_until(lambda: len(worker_pids(svc)) == 2, DEADLINE, message="2 workers")
    svc.worker_pids = worker_pids(svc)  # type: ignore[attr-defined]
    result = loaded_stop(svc, lambda: os.killpg(svc.proc.pid, signal.SIGTERM))  # type: ignore[union-attr]
    assert result.failures == [], result.failures[:5]
    messages = [x["message"] for x in svc.lines()]
    assert messages.count("ShutdownRequested") == 1  # the workers did not act on theirs
    assert "Drained" in messages and "Shutdown complete" in messages


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, 2)
    victim, survivor = svc.worker_pids  # type: ignore[attr-defined]
    os.kill(victim, signal.SIGKILL)
    failures = []
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        status = svc.post("/api/v1/messages", PLAN)[0]
        if status != 200:
            failures.append(status)
        pids = worker_pids(svc)
        if len(pids) == 2 and victim not in pids and svc.find("worker_started")[2:]:
            break
    assert failures == []  # the surviving worker served every request meanwhile
    (exited,) = svc.find("Worker exited; replacing it")
    assert exited["exit_code"] == -signal.SIGKILL
    pids = worker_pids(svc)
    assert survivor in pids and victim not in pids
    svc.worker_pids = pids  # type: ignore[attr-defined]
    every_worker_serves(svc, 2, since=len(served(svc)))  # index 1 again, on its new process


FAILING_START = """
import os, sys
flag = os.environ.get("MIRA_TEST_WORKER_START_FAILS", "")
if flag and os.path.exists(flag) and "mira.entrypoints.worker" in sys.orig_argv:
    sys.exit(3)
"""


def test_while_a_worker_cannot_be_replaced_the_others_take_every_new_connection(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """Worker 1 is killed and its replacements exit at start (a real interpreter stopped by a
    sitecustomize while a flag file exists): new connections all reach worker 0, none waits on
    the dead worker's socket or is reset; once starts work again, index 1 serves again."""
    site, flag = tmp_path / "site", tmp_path / "fail-starts"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAILING_START)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "MIRA_TEST_WORKER_START_FAILS": str(flag)}
    config = base_config(0)
    config["server"] = {"host": "127.0.0.1", "workers": 2}
    svc = ServiceProcess(tmp_path, config, env=env)
    services.append(svc)
    svc.start()
    wait_until(lambda: len(svc.find("worker_started")) == 2, DEADLINE, message="2 workers")
    victim = next(x["pid"] for x in svc.find("worker_started") if x["worker"] == 1)
    flag.write_text("")
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(svc.find("Worker replacement failed; trying again")) >= 2,
        DEADLINE,
        message="two failed replacements",
    )
    since = len(served(svc, "/openapi.json"))
    for _ in range(3):  # across several more failed attempts
        assert fetch_on_fresh_connections(svc, 16) == ["HTTP/1.1 200 OK"] * 16
    lines = access_lines(svc, "/openapi.json", since, 48)
    assert {x["worker"] for x in lines} == {0}
    flag.unlink()
    wait_until(lambda: len(svc.find("worker_started")) == 3, DEADLINE, message="a replacement")
    svc.worker_pids = worker_pids(svc)  # type: ignore[attr-defined]
    every_worker_serves(svc, 2, since=len(served(svc)))


def test_a_hung_worker_is_replaced_after_worker_timeout(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, 2, server={"worker_timeout": 1.0})
    hung, survivor = svc.worker_pids  # type: ignore[attr-defined]
    os.kill(hung, signal.SIGSTOP)  # alive, but answers nothing: no heartbeat
    try:
        wait_until(
            lambda: svc.find("Worker stopped answering; replacing it"),
            DEADLINE,
            message="the hung worker noticed",
        )
        wait_until(
            lambda: hung not in worker_pids(svc) and len(worker_pids(svc)) == 2,
            DEADLINE,
            message="a replacement",
        )
    finally:
        if _alive(hung):
            os.kill(hung, signal.SIGKILL)
    (line,) = svc.find("Worker stopped answering; replacing it")
    assert line["worker_timeout"] == 1.0 and survivor in worker_pids(svc)
    svc.worker_pids = worker_pids(svc)  # type: ignore[attr-defined]
    every_worker_serves(svc, 2, since=len(served(svc)))


def requests_total(svc: ServiceProcess) -> float:
    """mira_http_requests_total for the plan API, from /metrics on whichever worker answers."""
    text = svc.get("/metrics")[2].decode()
    series = 'mira_http_requests_total{method="POST",route="/api/v1/messages",status="200"}'
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series)
    ]
    return values[0] if values else 0.0


def test_metrics_on_any_worker_sum_all_workers_and_never_go_back_across_a_respawn(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    svc = start(services, tmp_path, 2)
    every_worker_serves(svc, 2)
    scrapes = [requests_total(svc) for _ in range(6)]  # different workers answer them
    served_so_far = scrapes[0]
    assert scrapes == [served_so_far] * 6  # every worker's requests, summed, on each
    # ... and that sum is the number of requests served (the access lines, once written)
    wait_until(lambda: len(served(svc)) == served_so_far, DEADLINE, message="the access lines")
    victim = svc.worker_pids[0]  # type: ignore[attr-defined]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in worker_pids(svc) and len(worker_pids(svc)) == 2,
        DEADLINE,
        message="the replacement",
    )
    svc.worker_pids = worker_pids(svc)  # type: ignore[attr-defined]
    after_kill = [requests_total(svc) for _ in range(6)]
    assert min(after_kill) >= served_so_far  # the dead worker's counts are kept
    for _ in range(10):
        assert svc.post("/api/v1/messages", PLAN)[0] == 200
    assert requests_total(svc) == max(after_kill) + 10
    text = svc.get("/metrics")[2].decode()
    assert "mira_lifecycle_phase" in text and "mira_config_generation 1.0" in text
