"""The config watcher against real files, real renames and the real watchdog observer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mira.adapters.watchdog_config import ConfigSnapshot, ConfigWatcher, read_config_file
from tests.support import poll_until as wait_until

pytestmark = pytest.mark.integration

DELIVERY_TIMEOUT = 3.0


class Recorder:
    """A thread-safe on_change callback that remembers every snapshot it was given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.snapshots: list[ConfigSnapshot] = []

    def __call__(self, snapshot: ConfigSnapshot) -> None:
        with self._lock:
            self.snapshots.append(snapshot)

    def texts(self) -> list[str | None]:
        with self._lock:
            return [s.text for s in self.snapshots]

    def last(self) -> ConfigSnapshot | None:
        with self._lock:
            return self.snapshots[-1] if self.snapshots else None

    def wait_for_text(self, text: str, timeout: float = DELIVERY_TIMEOUT) -> bool:
        return wait_until(lambda: text in self.texts(), timeout)


WatcherFactory = Callable[..., tuple[ConfigWatcher, Recorder]]


@pytest.fixture
def make_watcher() -> Iterator[WatcherFactory]:
    """Start watchers that report to a Recorder; all are stopped at teardown, even on failure."""
    started: list[ConfigWatcher] = []

    def make(path: Path, **kwargs: object) -> tuple[ConfigWatcher, Recorder]:
        recorder = Recorder()
        kwargs.setdefault("initial_digest", read_config_file(str(path)).digest)
        watcher = ConfigWatcher(str(path), recorder, **kwargs)  # type: ignore[arg-type]
        started.append(watcher)
        watcher.start()
        return watcher, recorder

    yield make
    for watcher in started:
        watcher.stop()


def config_text(value: int) -> str:
    return json.dumps({"logging": {"level": "INFO"}, "value": value})


def atomic_save(path: Path, text: str) -> None:
    """What most editors do: write a temp file beside the target, then rename it over."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def configmap_swap(mount: Path, files: dict[str, str]) -> None:
    """Update a mounted ConfigMap the way the kubelet's AtomicWriter does."""
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    new_dir = Path(tempfile.mkdtemp(prefix="..", dir=mount))
    for name, text in files.items():
        (new_dir / name).write_text(text)
    os.symlink(new_dir.name, mount / "..data_tmp")
    os.rename(mount / "..data_tmp", mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            os.symlink(f"..data/{name}", mount / name)
    if old is not None:
        shutil.rmtree(mount / old)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(config_text(0))
    return path


@pytest.fixture
def configmap(tmp_path: Path) -> Path:
    mount = tmp_path / "mount"
    mount.mkdir()
    configmap_swap(mount, {"config.json": config_text(0)})
    return mount / "config.json"


def test_reports_an_in_place_write_once_with_the_full_text(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(config_file)
    with open(config_file, "w") as handle:
        handle.write(config_text(1)[:10])
        handle.flush()
        handle.write(config_text(1)[10:])

    assert recorder.wait_for_text(config_text(1))
    assert recorder.texts() == [config_text(1)]


def test_reports_an_editor_atomic_save(config_file: Path, make_watcher: WatcherFactory) -> None:
    _, recorder = make_watcher(config_file)
    atomic_save(config_file, config_text(2))

    assert recorder.wait_for_text(config_text(2))
    last = recorder.last()
    assert last is not None
    assert last.path == str(config_file)
    assert last.error is None
    assert last.digest == hashlib.sha256(config_text(2).encode()).hexdigest()


def test_reports_a_vim_style_save_without_a_spurious_missing_file(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(config_file)
    os.rename(config_file, config_file.with_name("config.json~"))
    config_file.write_text(config_text(3))
    os.unlink(config_file.with_name("config.json~"))

    assert recorder.wait_for_text(config_text(3))
    time.sleep(0.4)  # longer than the error grace: a transient gap must never be reported
    assert recorder.texts() == [config_text(3)]


def test_reports_a_deleted_file_then_its_recreation(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(config_file)
    config_file.unlink()

    assert wait_until(lambda: recorder.last() is not None, DELIVERY_TIMEOUT)
    gone = recorder.last()
    assert gone is not None
    assert gone.text is None
    assert gone.error == f"config file {str(config_file)!r} does not exist"

    config_file.write_text(config_text(4))
    assert recorder.wait_for_text(config_text(4))


def test_reports_an_emptied_file_only_once_it_stays_empty(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(config_file)
    config_file.write_text("")
    config_file.write_text(config_text(17))  # empty only for a moment: not worth a report
    assert recorder.wait_for_text(config_text(17))

    config_file.write_text("")
    assert recorder.wait_for_text("")
    assert recorder.texts() == [config_text(17), ""]


def test_reports_a_kubernetes_configmap_data_swap(
    configmap: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(configmap)
    configmap_swap(configmap.parent, {"config.json": config_text(5)})

    assert recorder.wait_for_text(config_text(5))
    last = recorder.last()
    assert last is not None
    assert last.path == str(configmap)


def test_a_swap_stuck_behind_a_held_rename_is_still_reported_quickly(
    configmap: Path, tmp_path: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(configmap)
    junk = configmap.parent / "junk"
    junk.write_text("x")
    # An unpaired IN_MOVED_FROM: watchdog holds it, and every event behind it, for 0.5 s.
    os.rename(junk, tmp_path / "junk-moved-out")
    started = time.monotonic()
    configmap_swap(configmap.parent, {"config.json": config_text(16)})

    assert recorder.wait_for_text(config_text(16))
    # Only tells the rescue from watchdog's 0.5 s hold; latency is the benchmark's job.
    assert time.monotonic() - started < 0.45


def test_polling_only_mode_sees_saves_and_in_place_writes(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    watcher, recorder = make_watcher(config_file, use_events=False, poll_interval=0.05)
    atomic_save(config_file, config_text(6))
    assert recorder.wait_for_text(config_text(6))

    config_file.write_text(config_text(7) + "   ")
    assert recorder.wait_for_text(config_text(7) + "   ")
    assert watcher.running


def test_polling_only_mode_sees_a_configmap_swap(
    configmap: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(configmap, use_events=False, poll_interval=0.05)
    configmap_swap(configmap.parent, {"config.json": config_text(8)})

    assert recorder.wait_for_text(config_text(8))


def test_touch_and_unrelated_files_do_not_report(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(config_file)
    for _ in range(5):
        os.utime(config_file)
        subprocess.run(["touch", str(config_file)], check=True)
        (config_file.parent / "other.log").write_text("noise")
    atomic_save(config_file, config_text(9))  # a marker: everything before it was handled

    assert recorder.wait_for_text(config_text(9))
    assert recorder.texts() == [config_text(9)]


def test_200_configmap_swaps_miss_no_change(configmap: Path, make_watcher: WatcherFactory) -> None:
    _, recorder = make_watcher(configmap)
    deadline = time.monotonic() + 60
    for value in range(1, 201):
        configmap_swap(configmap.parent, {"config.json": config_text(value)})
        assert recorder.wait_for_text(config_text(value)), f"swap {value} was not reported"
        assert time.monotonic() < deadline

    digests = {s.digest for s in recorder.snapshots}
    assert len(digests) == 200
    last = recorder.last()
    assert last is not None
    assert last.text == config_text(200)


def test_back_to_back_swaps_report_the_final_state_last(
    configmap: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(configmap)
    for value in range(1, 101):
        configmap_swap(configmap.parent, {"config.json": config_text(value)})

    assert recorder.wait_for_text(config_text(100))
    time.sleep(0.8)  # past watchdog's 0.5 s rename hold: late events must not change the result
    last = recorder.last()
    assert last is not None
    assert last.text == config_text(100)
    assert len(recorder.snapshots) <= 100


def test_a_failing_callback_is_logged_and_the_watcher_goes_on(config_file: Path) -> None:
    seen: list[str | None] = []

    def explode(snapshot: ConfigSnapshot) -> None:
        seen.append(snapshot.text)
        if len(seen) == 1:
            raise RuntimeError("handler bug")

    watcher = ConfigWatcher(
        str(config_file), explode, initial_digest=read_config_file(str(config_file)).digest
    )
    with capture_logs() as logs:
        watcher.start()
        try:
            atomic_save(config_file, config_text(10))
            assert wait_until(lambda: len(seen) == 1, DELIVERY_TIMEOUT)
            atomic_save(config_file, config_text(11))
            assert wait_until(lambda: config_text(11) in seen, DELIVERY_TIMEOUT)
            assert watcher.running
        finally:
            watcher.stop()

    failures = [e for e in logs if e["event"].startswith("config change callback failed")]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["exc_info"] is True


def test_logs_never_contain_the_file_content(config_file: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    recorder = Recorder()
    digest = read_config_file(str(config_file)).digest
    watcher = ConfigWatcher(str(config_file), recorder, initial_digest=digest)
    with capture_logs() as logs:
        watcher.start()
        try:
            atomic_save(config_file, json.dumps({"token": secret}))
            assert recorder.wait_for_text(json.dumps({"token": secret}))
            config_file.write_bytes(b"\xef\xbb\xbf" + secret.encode())
            assert wait_until(lambda: len(logs) >= 2, DELIVERY_TIMEOUT)
        finally:
            watcher.stop()
    assert [entry["event"] for entry in logs] == ["config file changed", "config file unreadable"]
    assert all(secret not in repr(entry) for entry in logs)


def test_first_start_without_a_digest_reports_the_current_content(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    _, recorder = make_watcher(config_file, initial_digest=None)

    assert recorder.wait_for_text(config_text(0))
    assert recorder.texts() == [config_text(0)]


def test_poll_interval_can_be_shortened_while_running(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    watcher, recorder = make_watcher(config_file, use_events=False, poll_interval=3600)
    atomic_save(config_file, config_text(12))
    assert not recorder.wait_for_text(config_text(12), timeout=0.3)

    watcher.set_poll_interval(0.05)
    assert recorder.wait_for_text(config_text(12))


def test_check_now_reports_before_returning(
    config_file: Path, make_watcher: WatcherFactory
) -> None:
    watcher, recorder = make_watcher(config_file, use_events=False, poll_interval=3600)
    config_file.write_text(config_text(13))
    watcher.check_now()

    assert recorder.texts() == [config_text(13)]
    watcher.check_now()
    assert recorder.texts() == [config_text(13)]


def test_stop_is_prompt_and_final(config_file: Path) -> None:
    recorder = Recorder()
    watcher = ConfigWatcher(str(config_file), recorder, poll_interval=3600)
    watcher.start()
    assert watcher.running

    watcher.stop()  # the poll thread waits on an event, not a 3600 s sleep
    assert not watcher.running
    atomic_save(config_file, config_text(14))
    assert not recorder.wait_for_text(config_text(14), timeout=0.3)


def test_a_directory_created_after_start_is_picked_up(
    tmp_path: Path, make_watcher: WatcherFactory
) -> None:
    path = tmp_path / "later" / "config.json"
    _, recorder = make_watcher(path, poll_interval=0.05)
    path.parent.mkdir()
    path.write_text(config_text(15))

    assert recorder.wait_for_text(config_text(15))


def test_rejects_a_non_positive_poll_interval(config_file: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval must be > 0"):
        ConfigWatcher(str(config_file), lambda _: None, poll_interval=0)


def test_read_returns_text_and_the_digest_of_the_raw_bytes(config_file: Path) -> None:
    snapshot = read_config_file(str(config_file))

    assert snapshot.text == config_text(0)
    assert snapshot.error is None
    assert snapshot.digest == hashlib.sha256(config_file.read_bytes()).hexdigest()


def test_read_reports_a_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    snapshot = read_config_file(path)

    assert snapshot.text is None
    assert snapshot.error == f"config file {path!r} does not exist"


def test_read_reports_a_directory(tmp_path: Path) -> None:
    snapshot = read_config_file(str(tmp_path))

    assert snapshot.error == f"config file {str(tmp_path)!r} is a directory, not a file"


def test_read_reports_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "config.json"
    link.symlink_to(tmp_path / "gone.json")
    snapshot = read_config_file(str(link))

    assert snapshot.text is None
    assert snapshot.error is not None
    assert str(link) in snapshot.error
    assert "gone.json" in snapshot.error
    assert "does not exist" in snapshot.error


def test_read_reports_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    snapshot = read_config_file(str(tmp_path / "a.json"))

    assert snapshot.error is not None
    assert "symlink loop" in snapshot.error
    assert str(tmp_path / "a.json") in snapshot.error


def test_read_rejects_a_huge_file_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    tracemalloc.start()
    try:
        snapshot = read_config_file(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert snapshot.text is None
    assert snapshot.error == (
        f"config file {str(path)!r} is too large: 52428800 bytes, the limit is 10485760 bytes"
    )
    assert peak < 1024 * 1024


def test_read_rejects_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"a": "\xff\xfe\x00garbage"}')
    snapshot = read_config_file(str(path))

    assert snapshot.text is None
    assert snapshot.error is not None
    assert str(path) in snapshot.error
    assert "not valid UTF-8" in snapshot.error
    assert "byte 0xff at offset 7" in snapshot.error


def test_read_rejects_a_utf8_bom_and_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + config_text(0).encode())
    snapshot = read_config_file(str(path))

    assert snapshot.text is None
    assert snapshot.error is not None
    assert str(path) in snapshot.error
    assert "save it as UTF-8 without BOM" in snapshot.error


def test_read_does_not_hang_on_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    os.mkfifo(path)
    snapshot = read_config_file(str(path))

    assert snapshot.error == f"config file {str(path)!r} is not a regular file"


def test_error_digests_differ_per_problem(tmp_path: Path) -> None:
    missing = read_config_file(str(tmp_path / "nope.json"))
    directory = read_config_file(str(tmp_path))

    assert missing.digest != directory.digest
    assert missing.digest == read_config_file(str(tmp_path / "nope.json")).digest


_READ_AS_NOBODY = """
import json, os, sys
from mira.adapters.watchdog_config import read_config_file
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
snapshot = read_config_file(sys.argv[1])
print(json.dumps({"text": snapshot.text, "error": snapshot.error}))
"""


@pytest.fixture
def unreadable_file() -> Iterator[Path]:
    """A file only root may read, in a directory everyone may traverse."""
    directory = Path(tempfile.mkdtemp(prefix="mira-perm-"))
    try:
        directory.chmod(0o755)
        path = directory / "config.json"
        path.write_text(config_text(0))
        path.chmod(0o000)
        yield path
    finally:
        shutil.rmtree(directory)


def test_read_reports_permission_denied(unreadable_file: Path) -> None:
    if os.geteuid() == 0:  # root ignores file modes: read as the unprivileged user nobody
        result = subprocess.run(
            [sys.executable, "-c", _READ_AS_NOBODY, str(unreadable_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        outcome = json.loads(result.stdout)
    else:
        snapshot = read_config_file(str(unreadable_file))
        outcome = {"text": snapshot.text, "error": snapshot.error}

    assert outcome == {
        "text": None,
        "error": f"permission denied reading config file {str(unreadable_file)!r}",
    }
