"""Run every benchmark in turn (`make bench`); each prints its own figures and ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "http_overhead.py",
    "python_cost.py",
    "reload_latency.py",
    "secrets_bench.py",
    "shutdown_time.py",
    "image_bench.py",
)


def main() -> int:
    failed = 0
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / name)], cwd=HERE.parent) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
