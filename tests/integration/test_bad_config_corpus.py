"""Bad config corpus: the real service, serving, meets one broken config file after another."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_hot_reload import PLAN, base_config
from tests.support import ServiceProcess, wait_until

pytestmark = pytest.mark.integration

# setpriv execs the command: the PID we hold (and end) is the service's own.
DROP_FILE_OVERRIDES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
DEADLINE = 5.0
Breaker = Callable[[Path], None]


def text(content: str) -> Breaker:
    def write(path: Path) -> None:
        _replace(path, content.encode())

    return write


def raw(content: bytes) -> Breaker:
    return lambda path: _replace(path, content)


def config(**sections: Any) -> Breaker:
    """A file that is valid JSON but breaks a rule of the schema."""
    return text(json.dumps(sections))


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(".incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fifty_megabytes(path: Path) -> None:
    tmp = path.with_name(".incoming")
    with tmp.open("wb") as f:
        f.write(b'{"logging": {"level": "INFO"}, "padding": "')
        f.write(b"x" * (50 * 1024 * 1024))
        f.write(b'"}')
    os.replace(tmp, path)


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def unreadable(path: Path) -> None:
    # Unreadable before it takes the config's name: its content must never be read.
    tmp = path.with_name(".incoming")
    tmp.write_text('{"logging": {"level": "INFO"}}')
    tmp.chmod(0)
    os.replace(tmp, path)


def dangling_symlink(path: Path) -> None:
    link = path.with_name(".link")
    link.symlink_to(path.with_name("gone.json"))
    os.replace(link, path)


def symlink_loop(path: Path) -> None:
    loop = path.with_name("loop.json")
    loop.unlink(missing_ok=True)
    loop.symlink_to(path.name)
    link = path.with_name(".link")
    link.symlink_to(loop.name)
    os.replace(link, path)


def deleted(path: Path) -> None:
    path.unlink()


# (id, how to break the file, text the reason must contain)
CORPUS: list[tuple[str, Breaker, str]] = [
    ("truncated-json", text('{"logging": {"level": "INFO"'), "invalid JSON at line 1, column"),
    (
        "trailing-comma",
        text('{"logging": {"level": "INFO",}}'),
        "invalid JSON at line 1, column 30",
    ),
    ("error-on-line-3", text('{\n  "logging": {\n    "level" "INFO"\n}}'), "line 3, column 13"),
    ("top-level-array", text("[1, 2]"), "the top level must be a JSON object"),
    ("deeply-nested", text("[" * 100_000), "nested too deeply"),
    (
        "number-as-string",
        config(config={"hot_reload": True, "poll_interval": "fast"}),
        "config.poll_interval: expected number, got string",
    ),
    (
        "bool-as-string",
        config(logging={"json_format": "yes"}),
        "logging.json_format: expected boolean, got string",
    ),
    ("section-as-string", config(logging="DEBUG"), "logging: expected an object, got string"),
    ("unknown-top-level-key", config(loging={"level": "DEBUG"}), "loging: unknown key"),
    ("unknown-nested-key", config(logging={"lvl": "DEBUG"}), "logging.lvl: unknown key"),
    (
        "invalid-level",
        config(logging={"level": "VERBOSE"}),
        "logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'VERBOSE'",
    ),
    (
        "negative-interval",
        config(config={"hot_reload": True, "poll_interval": -1}),
        "config.poll_interval: must be at least 0.1 and at most 604800 seconds, got -1",
    ),
    (
        "zero-interval",
        config(config={"hot_reload": True, "poll_interval": 0}),
        "config.poll_interval: must be at least 0.1 and at most 604800 seconds, got 0",
    ),
    (
        "nanosecond-interval",
        config(config={"hot_reload": True, "poll_interval": 1e-9}),
        "config.poll_interval: must be at least 0.1 and at most 604800 seconds, got 1e-09",
    ),
    (
        "tiny-vault-timeout",
        config(secrets={"vault": {"timeout": 0.001}}),
        "secrets.vault.timeout: must be at least 0.1 and at most 604800 seconds, got 0.001",
    ),
    (
        "duplicate-key",
        text('{"logging": {"level": "INFO",\n  "level": "DEBUG"}}'),
        "duplicate key logging.level at line 2, column 3 (a key may appear once)",
    ),
    (
        "duplicate-top-level-key",
        text('{"config": {"hot_reload": true},\n"config": {"hot_reload": false}}'),
        "duplicate key config at line 2, column 1",
    ),
    (
        "nine-megabyte-level",
        config(logging={"level": "A" * 9_000_000}),
        "got 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'... (9000000 characters)",
    ),
    (
        "nine-megabyte-key",
        config(logging={"B" * 9_000_000: 1}),
        "logging.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB...(9000000 characters): unknown key",
    ),
    (
        "nan-interval",
        text('{"config": {"hot_reload": true, "poll_interval": NaN}}'),
        "invalid JSON: NaN is not allowed (numbers must be finite)",
    ),
    (
        "negative-retries",
        config(integrations={"jira": {"max_retries": -2}}),
        "integrations.jira.max_retries: must be between 0 and 1000, got -2",
    ),
    ("port-out-of-range", config(server={"port": 70000}), "server.port: must be a TCP port"),
    (
        "malformed-secret-reference",
        config(integrations={"github": {"token": "secret://"}}),
        "integrations.github.token: malformed secret reference",
    ),
    (
        "missing-secret",
        config(integrations={"github": {"token": "secret://no-such-app:token"}}),
        "secret://no-such-app:token",
    ),
    ("utf8-bom", raw(b'\xef\xbb\xbf{"logging": {}}'), "byte order mark (BOM)"),
    ("empty-file", text(""), "file is empty"),
    ("whitespace-only", text("  \n\t\n"), "file is empty"),
    ("binary-garbage", raw(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 64), "is not valid UTF-8"),
    ("fifty-megabytes", fifty_megabytes, "is too large"),
    ("directory-in-place", directory, "is a directory, not a file"),
    ("permission-denied", unreadable, "permission denied reading config file"),
    ("dangling-symlink", dangling_symlink, "which does not exist"),
    ("symlink-loop", symlink_loop, "symlink loop"),
    ("deleted", deleted, "does not exist"),
]


class UnprivilegedService(ServiceProcess):
    """The real service without root's permission override (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH dropped from its bounding set), so a chmod 000 file is unreadable."""

    def start(self, wait_ready: bool = True) -> UnprivilegedService:
        self.proc = subprocess.Popen(
            [*DROP_FILE_OVERRIDES, sys.executable, "-m", self.module, str(self.config_path)],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log_path.open("wb"),
            stderr=self.err_path.open("wb"),
        )
        if wait_ready:
            wait_until(self._ready, timeout=30, message=f"{self.url}/ready")
        return self


class Corpus:
    """One service for the whole corpus; `restore()` brings a new good version before a case."""

    def __init__(self, service: UnprivilegedService) -> None:
        self.service = service
        self.path = service.config_path
        self.generation = 1
        self.marker = 0

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, _, body = self.service.get("/ready")
        return status, json.loads(body)

    def restore(self) -> None:
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        self.marker += 1
        good = base_config(self.marker)
        good["server"] = {"host": "127.0.0.1", "port": self.service.port}
        _replace(self.path, json.dumps(good).encode())
        self.generation += 1
        wait_until(
            lambda: self.ready()[1]["config"]["generation"] == self.generation,
            DEADLINE,
            message=f"good config generation {self.generation}",
        )
        assert self.ready()[1]["config"]["last_error"] is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    workdir = tmp_path_factory.mktemp("corpus")
    config = base_config(0, config={"hot_reload": True, "poll_interval": 0.5})
    del config["server"]["port"]  # ServiceProcess picks a free one
    service = UnprivilegedService(workdir, config)
    try:
        service.start()
        yield Corpus(service)
    finally:
        service.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the 50 MB case leaves nothing behind


@pytest.mark.parametrize(("name", "breaker", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_config_is_rejected_with_a_clear_reason_and_the_service_keeps_serving(
    corpus: Corpus, name: str, breaker: Breaker, reason: str
) -> None:
    corpus.restore()
    errors_before = len(_rejections(corpus.service))
    breaker(corpus.path)
    wait_until(
        lambda: corpus.ready()[1]["config"]["last_error"], DEADLINE, message=f"{name} rejected"
    )
    status, body = corpus.ready()
    # A rejected value is quoted by a short prefix only: /ready stays small.
    assert len(json.dumps(body)) < 4096, json.dumps(body)[:4096]
    (error,) = body["config"]["last_error"]
    assert reason in error, error
    assert status == 200 and body["status"] == "ready"
    assert body["config"]["generation"] == corpus.generation  # the last good config is live
    assert corpus.service.proc is not None and corpus.service.proc.poll() is None
    assert corpus.service.get("/health")[0] == 200
    assert corpus.service.post("/api/v1/messages", PLAN)[0] == 200
    logged = _rejections(corpus.service)[errors_before:]
    assert logged and logged[-1]["level"] == "ERROR" and reason in logged[-1]["reasons"][0]
    assert len(json.dumps(logged[-1])) < 4096


def _rejections(service: ServiceProcess) -> list[dict[str, Any]]:
    return service.find("Configuration rejected; keeping the last good configuration")


def test_the_corpus_covers_at_least_twenty_cases() -> None:
    assert len(CORPUS) >= 20 and len({c[0] for c in CORPUS}) == len(CORPUS)
