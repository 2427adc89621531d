"""What the reload-latency benchmarks share: the two kinds of change, timing constants."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DELIVERY_TIMEOUT = 2.0
BLOCK = 50  # trials per scenario before switching to the next, so drift hits all alike
# Idle time between trials, random so that changes land at every phase of the poll cycle.
GAP_RANGE = (0.002, 0.05)


def replace_change(path: Path, text: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """An editor's atomic save: the temp file is written first, the timed step is the rename."""
    tmp = path.with_name(".config.json.tmp")
    tmp.write_text(text)
    return (lambda: os.replace(tmp, path)), (lambda: None)


def swap_change(path: Path, text: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """The kubelet's AtomicWriter: new dir and `..data_tmp` first, the timed step is the rename."""
    mount = path.parent
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    new_dir = Path(tempfile.mkdtemp(prefix="..", dir=mount))
    (new_dir / "config.json").write_text(text)
    os.symlink(new_dir.name, mount / "..data_tmp")

    def cleanup() -> None:
        if not path.is_symlink():
            os.symlink("..data/config.json", path)
        if old is not None:
            shutil.rmtree(mount / old)

    return (lambda: os.rename(mount / "..data_tmp", mount / "..data")), cleanup


CHANGES = {"replace": replace_change, "swap": swap_change}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")
