"""requirements.txt: a hash-pinned lock (`make lock`) that agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.txt"
BUILD_LOCK = ROOT / "deploy" / "docker" / "build-requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;[^\\]*)?\\?$")

pytestmark = pytest.mark.integration


def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) for every requirement in a pip lock file."""
    found: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in found, f"{lock.name}: {current} pinned twice"
            found[current] = (match.group(2), [])
        elif line.startswith("--hash=sha256:"):
            assert current, f"{lock.name}: a hash before any requirement"
            found[current][1].append(line.removeprefix("--hash=sha256:").rstrip(" \\"))
        else:
            raise AssertionError(f"{lock.name}: not a pinned requirement: {line!r}")
    return found


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def assert_locked(requirements: list[str], lock: Path) -> None:
    locked = pins(lock)
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in {lock.name}: run `make lock`"
        version = locked[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {req.name}=={version}, outside {req.specifier}: run `make lock`"
        )


def test_every_runtime_dependency_is_pinned_within_its_pyproject_range() -> None:
    meta = project()["project"]
    assert isinstance(meta, dict)
    assert_locked(meta["dependencies"] + meta["optional-dependencies"]["all"], LOCK)


def test_the_build_tools_lock_covers_the_build_system() -> None:
    build_system = project()["build-system"]
    assert isinstance(build_system, dict)
    assert_locked([*build_system["requires"], "pip"], BUILD_LOCK)


@pytest.mark.parametrize("lock", [LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_pin_carries_sha256_hashes(lock: Path) -> None:
    locked = pins(lock)
    assert len(locked) >= 3
    for name, (_, hashes) in locked.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_the_guides_old_pins_are_replaced_by_newer_releases() -> None:
    locked = pins(LOCK)
    for name, old in (("flask", "3.0.0"), ("watchdog", "3.0.0"), ("hvac", "1.2.1")):
        version = tuple(int(p) for p in locked[name][0].split(".")[:2])
        assert version > tuple(int(p) for p in old.split(".")[:2]), (name, locked[name][0])


def test_the_dockerfile_installs_only_from_the_locks_with_hashes_required() -> None:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    installs = [ln for ln in text.splitlines() if "pip" in ln and " install" in ln]
    assert installs
    for line in installs:
        for command in re.split(r"&&", line):
            if " install " not in command:
                continue
            assert "--require-hashes" in command or "--no-index" in command, command
    assert "-r requirements.txt" in text and "-r build-requirements.txt" in text


def test_the_parser_rejects_an_unpinned_line(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text("flask>=3.0\n")
    with pytest.raises(AssertionError, match="not a pinned requirement"):
        pins(lock)
