"""Hot reload end to end: real files, the real watchdog, MiraApplication and the real service."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from mira.adapters.watchdog_config import ConfigWatcher
from mira.app import MiraApplication
from mira.container import Container
from mira.domain import events as ev
from tests.support import ServiceProcess, free_port, http, wait_until

pytestmark = pytest.mark.integration

DEADLINE = 3.0
PLAN = {"type": "generate_plan", "data": {"name": "n", "goals": ["g"], "duration_weeks": 2}}
Save = Callable[[Path, str], None]


# -- how people and platforms save a file ---------------------------------------------------
def in_place(path: Path, text: str) -> None:
    with open(path, "r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(text)


def atomic_save(path: Path, text: str) -> None:
    """Editors: write a temporary file beside the target, rename it over."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rename_away_and_recreate(path: Path, text: str) -> None:
    """vim's backup style: move the old file aside, write a new one, drop the backup."""
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    path.write_text(text)
    backup.unlink()


def delete_and_recreate(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


def configmap_swap(mount: Path, text: str, name: str = "config.json") -> None:
    """The kubelet's AtomicWriter: new timestamped dir, `..data_tmp` renamed over `..data`."""
    link = mount / "..data"
    old = os.readlink(link) if link.is_symlink() else None
    new_dir = Path(tempfile.mkdtemp(prefix="..", dir=mount))
    (new_dir / name).write_text(text)
    os.symlink(new_dir.name, mount / "..data_tmp")
    os.rename(mount / "..data_tmp", link)
    if not (mount / name).is_symlink():
        os.symlink(f"..data/{name}", mount / name)
    if old is not None:
        shutil.rmtree(mount / old)


def base_config(marker: int = 0, **sections: Any) -> dict[str, Any]:
    """A valid config; `marker` (integrations.jira.max_retries) makes each version distinct."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "config": {"hot_reload": True, "poll_interval": 5},
        "integrations": {"jira": {"max_retries": marker}},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


# -- an embedded Mira on real files ---------------------------------------------------------
class HotApp:
    """MiraApplication started on `path`; every whole-config callback is recorded."""

    def __init__(self, path: Path, log_file: Path, container: Container) -> None:
        self.path, self.log_file = path, log_file
        self.app = MiraApplication(str(path), container=container)
        self.configs: list[dict[str, Any]] = []
        self._seen = threading.Condition()
        reloader = self.app.hot_reload_config
        assert reloader is not None
        self.reloader = reloader
        reloader.register_reload_callback(self._record)

    def _record(self, config: dict[str, Any]) -> None:
        with self._seen:
            self.configs.append(config)
            self._seen.notify_all()

    def config(self, marker: int, **sections: Any) -> dict[str, Any]:
        """base_config on this app's port and log file (so those never count as changes)."""
        config = base_config(marker, **sections)
        config["server"]["port"] = self.app.settings.server.port
        config.setdefault("logging", {})["file"] = str(self.log_file)
        return config

    @property
    def generation(self) -> int:
        return int(self.app.container.bus().state.config_generation)

    @property
    def marker(self) -> int:
        return int(self.app.settings.integrations.jira.max_retries)

    def wait_marker(self, marker: int, timeout: float = DEADLINE) -> float:
        """Block until a callback saw `marker`; returns the wait in seconds."""
        start = time.perf_counter()
        with self._seen:
            ok = self._seen.wait_for(
                lambda: (
                    bool(self.configs)
                    and self.configs[-1]["integrations"]["jira"]["max_retries"] == marker
                ),
                timeout,
            )
        assert ok, f"marker {marker} not applied within {timeout}s (live: {self.marker})"
        return time.perf_counter() - start

    def events(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.app.container.journal().read() if isinstance(e, kind)]

    def url(self, path: str) -> str:
        assert self.app.address is not None
        return f"http://127.0.0.1:{self.app.address[1]}{path}"

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, _, body = http("GET", self.url("/ready"))
        return status, json.loads(body)

    def log_lines(self, message: str) -> list[dict[str, Any]]:
        self.app.container.logging().flush()  # lines are queued for up to 50 ms
        lines = [json.loads(x) for x in self.log_file.read_text().splitlines() if x.strip()]
        return [x for x in lines if x.get("message") == message]


HotAppFactory = Callable[..., HotApp]


@pytest.fixture
def hot_app(tmp_path: Path) -> Iterator[HotAppFactory]:
    """Start embedded apps on a given config file; each one is stopped, even on failure."""
    started: list[HotApp] = []

    def make(path: Path, config: dict[str, Any], polling_only: bool = False) -> HotApp:
        log_file = tmp_path / "app.log"
        config.setdefault("logging", {})["file"] = str(log_file)
        if not config["server"]["port"]:
            config["server"]["port"] = free_port()
        if not path.exists():
            path.write_text(json.dumps(config))
        container = Container()
        if polling_only:
            factory = functools.partial(ConfigWatcher, use_events=False)
            container.watcher_factory.override(providers.Object(factory))
        hot = HotApp(path, log_file, container)
        started.append(hot)
        hot.app.start()
        return hot

    yield make
    for hot in started:
        hot.app.stop(timeout=10)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


@pytest.fixture
def configmap_path(tmp_path: Path) -> Path:
    mount = tmp_path / "mount"
    mount.mkdir()
    return mount / "config.json"


# -- detection ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "save", [in_place, atomic_save, rename_away_and_recreate, delete_and_recreate]
)
def test_every_kind_of_save_is_applied(save: Save, config_path: Path, hot_app: Any) -> None:
    hot = hot_app(config_path, base_config(0))
    for marker in (1, 2, 3):
        save(config_path, json.dumps(hot.config(marker)))
        hot.wait_marker(marker)
    assert hot.generation == 4 and hot.marker == 3
    assert hot.events(ev.ConfigRejected) == []  # no half-written or missing file was applied


def test_a_configmap_symlink_swap_is_applied(configmap_path: Path, hot_app: Any) -> None:
    config = base_config(0, server={"port": free_port()})
    config["logging"] = {"file": str(configmap_path.parent.parent / "app.log")}
    configmap_swap(configmap_path.parent, json.dumps(config))
    hot = hot_app(configmap_path, config)
    config["integrations"]["jira"]["max_retries"] = 1
    configmap_swap(configmap_path.parent, json.dumps(config))
    hot.wait_marker(1)
    assert hot.ready()[1]["config"]["generation"] == 2


def test_200_configmap_swaps_none_missed_and_the_last_is_live(
    configmap_path: Path, hot_app: Any
) -> None:
    config = base_config(0, server={"port": free_port()})
    config["logging"] = {"file": str(configmap_path.parent.parent / "app.log")}
    configmap_swap(configmap_path.parent, json.dumps(config))
    hot = hot_app(configmap_path, config)
    waits = []
    for marker in range(1, 201):
        config["integrations"]["jira"]["max_retries"] = marker
        configmap_swap(configmap_path.parent, json.dumps(config))
        waits.append(hot.wait_marker(marker))
    markers = [c["integrations"]["jira"]["max_retries"] for c in hot.configs]
    assert markers == list(range(1, 201))  # each swap seen exactly once, in order
    assert hot.marker == 200 and hot.generation == 201
    status, body = hot.ready()
    assert status == 200 and body["config"]["generation"] == 201
    # Timing is the benchmark's job; this only tells events from the 5 s poll.
    assert sorted(waits)[len(waits) // 2] < 2.5


def test_a_touch_or_an_identical_rewrite_changes_nothing(config_path: Path, hot_app: Any) -> None:
    hot = hot_app(config_path, base_config(0))
    text = config_path.read_text()
    os.utime(config_path)
    atomic_save(config_path, text)
    # Then a real change: once it is live, anything the touch caused would have come before.
    config = json.loads(text)
    config["integrations"]["jira"]["max_retries"] = 1
    atomic_save(config_path, json.dumps(config))
    hot.wait_marker(1)
    assert len(hot.configs) == 1 and hot.generation == 2
    assert hot.events(ev.ConfigUnchanged) == []


# -- validate, then swap --------------------------------------------------------------------
def test_a_rejected_file_keeps_the_last_good_config_and_the_service_ready(
    config_path: Path, hot_app: Any
) -> None:
    hot = hot_app(config_path, base_config(0))
    atomic_save(config_path, '{"integrations": {"jira": {"max_retries": 7}')
    wait_until(lambda: hot.events(ev.ConfigRejected), DEADLINE, message="ConfigRejected")
    status, body = hot.ready()
    assert status == 200 and body["status"] == "ready"
    assert body["config"]["generation"] == 1
    assert "invalid JSON at line 1, column" in body["config"]["last_error"][0]
    assert str(config_path) in body["config"]["last_error"][0]
    assert hot.marker == 0 and http("GET", hot.url("/health"))[0] == 200
    (line,) = hot.log_lines("Configuration rejected; keeping the last good configuration")
    assert line["level"] == "ERROR" and "line 1, column" in line["reasons"][0]
    # Fixed: applied, and the error is gone from /ready.
    config = hot.config(7)
    atomic_save(config_path, json.dumps(config))
    hot.wait_marker(7)
    assert hot.ready()[1]["config"] == {
        "generation": 2,
        "source": str(config_path),
        "last_error": None,
    }


def test_a_key_path_error_is_named_and_nothing_of_the_file_is_applied(
    config_path: Path, hot_app: Any
) -> None:
    hot = hot_app(config_path, base_config(0))
    bad = hot.config(5, config={"poll_interval": -1})
    atomic_save(config_path, json.dumps(bad))
    wait_until(lambda: hot.ready()[1]["config"]["last_error"], DEADLINE, message="last_error")
    (reason,) = hot.ready()[1]["config"]["last_error"]
    assert "config.poll_interval: must be at least 0.1 and at most 604800 seconds, got -1" in reason
    assert hot.marker == 0  # the valid part (max_retries 5) was not applied either


# -- selective updates, env overrides, callbacks ---------------------------------------------
def test_only_subscribers_of_changed_keys_run(config_path: Path, hot_app: Any) -> None:
    hot = hot_app(config_path, base_config(0))
    calls: list[tuple[str, Any]] = []
    hot.reloader.subscribe("config.poll_interval", lambda v: calls.append(("poll", v)))
    hot.reloader.subscribe("integrations.jira", lambda v: calls.append(("jira", v["timeout"])))
    config = hot.config(1)
    config["integrations"]["jira"]["timeout"] = 3
    atomic_save(config_path, json.dumps(config))
    hot.wait_marker(1)
    assert calls == [("jira", 3.0)]
    (changed,) = hot.events(ev.ConfigChanged)
    assert changed.changed_keys == ("integrations.jira.max_retries", "integrations.jira.timeout")
    (line,) = hot.log_lines("Configuration reloaded successfully")
    assert line["changed_keys"] == list(changed.changed_keys) and line["generation"] == 2


def test_env_overrides_stay_on_top_after_a_reload(
    config_path: Path, hot_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIRA_LOG_LEVEL", "ERROR")
    hot = hot_app(config_path, base_config(0, logging={"level": "INFO"}))
    assert hot.app.settings.logging.level == "ERROR"
    atomic_save(config_path, json.dumps(hot.config(1, logging={"level": "DEBUG"})))
    hot.wait_marker(1)
    assert hot.app.settings.logging.level == "ERROR"
    assert hot.configs[-1]["logging"]["level"] == "ERROR"
    assert "logging.level" not in hot.events(ev.ConfigChanged)[0].changed_keys


def test_a_failing_callback_is_logged_and_stops_neither_others_nor_the_reload(
    config_path: Path, hot_app: Any
) -> None:
    hot = hot_app(config_path, base_config(0))
    later: list[int] = []

    def broken(new_config: dict[str, Any]) -> None:
        raise ValueError("bug in an embedding app's callback")

    hot.reloader.register_reload_callback(broken)
    hot.reloader.subscribe("integrations.jira.max_retries", later.append)
    atomic_save(config_path, json.dumps(hot.config(1)))
    hot.wait_marker(1)  # a callback registered before the broken one
    wait_until(lambda: later == [1], DEADLINE, message="the key subscriber")
    (line,) = hot.log_lines("Configuration callback failed")
    assert "bug in an embedding app's callback" in line["exception"]
    assert hot.generation == 2 and hot.log_lines("Configuration reloaded successfully")


# -- the `config` section itself -------------------------------------------------------------
def test_turning_hot_reload_off_stops_watching(config_path: Path, hot_app: Any) -> None:
    hot = hot_app(config_path, base_config(0, config={"poll_interval": 0.1}))
    off = hot.config(1, config={"hot_reload": False})
    atomic_save(config_path, json.dumps(off))
    hot.wait_marker(1)
    wait_until(lambda: not hot.reloader.watching, DEADLINE, message="the watcher to stop")
    assert hot.log_lines("Configuration hot reload turned off")
    atomic_save(config_path, json.dumps(hot.config(2)))
    # A negative check needs some time: 10 poll intervals and far beyond event latency.
    time.sleep(0.5)
    assert hot.marker == 1 and hot.generation == 2


def test_a_new_poll_interval_applies_while_running(config_path: Path, hot_app: Any) -> None:
    # Polling only (a file system without events): changes are seen only by polling.
    hot = hot_app(config_path, base_config(0, config={"poll_interval": 60}), polling_only=True)
    fast = hot.config(1, config={"poll_interval": 0.1})
    atomic_save(config_path, json.dumps(fast))
    hot.reloader.check_now()  # without it, the next poll is a minute away
    hot.wait_marker(1)
    fast["integrations"]["jira"]["max_retries"] = 2
    atomic_save(config_path, json.dumps(fast))
    hot.wait_marker(2, timeout=30.0)  # the old interval would take 60 s


GUIDE_SNIPPET = """
from mira.app import MiraApplication

app = MiraApplication('config.json')

def on_config_change(new_config):
    print(f"Configuration updated: {new_config}")

if app.hot_reload_config:
    app.hot_reload_config.register_reload_callback(on_config_change)
"""
RUN_UNTIL_STDIN_CLOSES = """
import sys
app.start()
print("STARTED", flush=True)
sys.stdin.read()
app.stop()
"""


def test_the_guides_monitoring_snippet_prints_each_new_config(tmp_path: Path) -> None:
    config = base_config(0, server={"port": free_port()}, logging={"file": "app.log"})
    config["integrations"]["github"] = {"token": "ghp_literal_value_1234"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "embed.py").write_text(GUIDE_SNIPPET + RUN_UNTIL_STDIN_CLOSES)
    out = tmp_path / "stdout.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRA_")}
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "embed.py"],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until(lambda: "STARTED" in out.read_text(), 30, message="the embedded app")
        config["logging"]["level"] = "WARNING"
        atomic_save(tmp_path / "config.json", json.dumps(config))
        wait_until(lambda: "Configuration updated: {" in out.read_text(), DEADLINE, message="print")
        printed = out.read_text().split("Configuration updated: ", 1)[1].splitlines()[0]
        assert "'level': 'WARNING'" in printed and "'max_retries': 0" in printed
        assert "ghp_literal_value_1234" not in out.read_text()
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- the real service -------------------------------------------------------------------------
@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> ServiceProcess:
        config["server"].pop("port", None)
        svc = ServiceProcess(tmp_path, config, env)
        started.append(svc)
        return svc.start()

    yield start
    for svc in started:
        svc.stop()


def svc_config(svc: ServiceProcess, marker: int, **sections: Any) -> dict[str, Any]:
    """base_config on the service's port (so that never counts as a change)."""
    config = base_config(marker, **sections)
    config["server"] = {"host": "127.0.0.1", "port": svc.port}
    return config


def ready_config(svc: ServiceProcess) -> dict[str, Any]:
    status, _, body = svc.get("/ready")
    assert status == 200, body
    config: dict[str, Any] = json.loads(body)["config"]
    return config


def wait_generation(svc: ServiceProcess, generation: int) -> None:
    wait_until(
        lambda: ready_config(svc)["generation"] >= generation,
        DEADLINE,
        message=f"generation {generation} on /ready",
    )


def metric(svc: ServiceProcess, name: str) -> float:
    text = svc.get("/metrics")[2].decode()
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


def test_logging_level_format_and_file_change_live(
    service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    svc = service(base_config(0))
    config = svc_config(svc, 1, logging={"level": "WARNING"})
    atomic_save(svc.config_path, json.dumps(config))
    wait_generation(svc, 2)
    svc.post("/api/v1/messages", PLAN, headers={"X-Request-ID": "quiet-1"})
    config["logging"] = {"level": "INFO", "json_format": False}
    atomic_save(svc.config_path, json.dumps(config))
    wait_generation(svc, 3)
    svc.post("/api/v1/messages", PLAN, headers={"X-Request-ID": "console-1"})
    wait_until(lambda: "console-1" in svc.log_path.read_text(), DEADLINE, message="console line")
    log_file = tmp_path / "logs" / "mira.log"
    config["logging"] = {"level": "INFO", "file": str(log_file)}
    atomic_save(svc.config_path, json.dumps(config))
    wait_generation(svc, 4)
    # /ready shows the generation as soon as it is decided; the success line comes after the
    # effects (here: the new file) were applied.
    wait_until(
        lambda: log_file.exists() and "Configuration reloaded successfully" in log_file.read_text(),
        DEADLINE,
        message="the reload confirmed in the new file",
    )
    svc.post("/api/v1/messages", PLAN, headers={"X-Request-ID": "file-1"})
    stdout = svc.log_path.read_text()
    assert "quiet-1" not in stdout  # its INFO access line was dropped at WARNING
    console = [x for x in stdout.splitlines() if "console-1" in x]
    assert console and not console[0].startswith("{")  # readable console line
    wait_until(lambda: "file-1" in log_file.read_text(), DEADLINE, message="line in new file")
    assert "file-1" not in stdout
    file_lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert any(x["message"] == "Configuration reloaded successfully" for x in file_lines)


def test_a_log_file_that_cannot_open_rejects_the_reload_naming_the_path(
    service: Callable[..., ServiceProcess],
) -> None:
    svc = service(base_config(0))
    config = svc_config(svc, 1, logging={"file": "/dev/null/mira.log"})
    atomic_save(svc.config_path, json.dumps(config))
    wait_until(lambda: svc.find("ConfigRejected"), DEADLINE, message="ConfigRejected")
    (rejected,) = svc.find("Configuration rejected; keeping the last good configuration")
    assert any("/dev/null/mira.log" in r and "logging.file" in r for r in rejected["reasons"])
    assert ready_config(svc)["generation"] == 1  # nothing of it applied
    assert svc.post("/api/v1/messages", PLAN)[0] == 200
    atomic_save(svc.config_path, json.dumps(svc_config(svc, 2)))
    wait_generation(svc, 2)  # a good edit after it applies as usual, logs still on stdout
    wait_until(lambda: svc.find("Configuration reloaded successfully"), DEADLINE, message="ok")


def test_a_log_file_on_a_full_device_rejects_the_reload_and_the_old_sink_stays(
    service: Callable[..., ServiceProcess],
) -> None:
    svc = service(base_config(0))
    atomic_save(svc.config_path, json.dumps(svc_config(svc, 1, logging={"file": "/dev/full"})))
    wait_until(lambda: svc.find("ConfigRejected"), DEADLINE, message="ConfigRejected")
    (rejected,) = svc.find("Configuration rejected; keeping the last good configuration")
    assert any("/dev/full" in r for r in rejected["reasons"])
    assert ready_config(svc)["generation"] == 1


def test_a_restart_required_change_is_announced_and_applied_to_nothing(
    service: Callable[..., ServiceProcess],
) -> None:
    svc = service(base_config(0))
    moved = base_config(0, server={"port": free_port(), "host": "127.0.0.1"})
    atomic_save(svc.config_path, json.dumps(moved))
    wait_until(lambda: svc.find("ConfigNeedsRestart"), DEADLINE, message="ConfigNeedsRestart")
    (event,) = svc.find("ConfigNeedsRestart")
    assert event["restart_required"] == ["server.port"]
    assert ready_config(svc)["generation"] == 1  # not applied: the generation stays
    warnings = [x for x in svc.lines() if x["level"] == "WARNING"]
    (warning,) = [x for x in warnings if not x["message"].startswith("server.api_tokens is not")]
    assert "restart required" in warning["message"] and warning["restart_required"] == [
        "server.port"
    ]
    assert svc.get("/health")[0] == 200  # still on the old port
    assert not svc.find("Configuration reloaded successfully")


def test_metrics_and_ready_follow_reloads(service: Callable[..., ServiceProcess]) -> None:
    svc = service(base_config(0))
    assert metric(svc, "mira_config_generation") == 1
    before = metric(svc, "mira_config_last_reload_timestamp_seconds")
    atomic_save(svc.config_path, json.dumps(svc_config(svc, 1)))
    wait_generation(svc, 2)
    atomic_save(svc.config_path, "{not json")
    wait_until(lambda: ready_config(svc)["last_error"], DEADLINE, message="last_error")
    atomic_save(svc.config_path, json.dumps(svc_config(svc, 1), indent=2))  # same values
    wait_until(
        lambda: metric(svc, 'mira_config_reloads_total{result="unchanged"}') == 1,
        DEADLINE,
        message="unchanged counted",
    )
    assert metric(svc, 'mira_config_reloads_total{result="applied"}') == 2  # start + change
    assert metric(svc, 'mira_config_reloads_total{result="rejected"}') == 1
    assert metric(svc, "mira_config_generation") == 2
    assert metric(svc, "mira_config_last_reload_timestamp_seconds") > before


def test_reloads_under_http_load_fail_no_request(service: Callable[..., ServiceProcess]) -> None:
    svc = service(base_config(0))
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 20  # bounded in time and in count
        for i in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status = (svc.post("/api/v1/messages", PLAN) if i % 2 else svc.get("/health"))[0]
            except OSError:
                status = -1
            results.append(status)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        saves: list[Save] = [atomic_save, in_place, rename_away_and_recreate]
        for n in range(1, 31):
            config = svc_config(svc, n, logging={"level": "WARNING" if n % 2 else "INFO"})
            saves[n % 3](svc.config_path, json.dumps(config))
            wait_generation(svc, n + 1)
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert len(results) > 100
    assert [s for s in results if s != 200] == []
    assert ready_config(svc)["generation"] == 31
