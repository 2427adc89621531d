"""`mira healthcheck [config]`: probe /health at the address the config file gives (HEALTHCHECK).

Without a config argument it uses the file the running service was started with: the path on
the command line of the container's Mira process (PID 1, or its first Mira process under an
init), so a `docker run ... python -m mira.entrypoints.web /etc/mira/config.json` needs no
matching HEALTHCHECK override. With no Mira process found it falls back to `config.json`.
"""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mira.adapters.config_file import read_config_file
from mira.adapters.listen_address import address_family
from mira.domain.config.loading import load_settings

#: A wildcard listen address is probed on the loopback address of the same family.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_address(host: str) -> str:
    """The address to connect to for a server listening on `host` (read as the listener
    reads it: brackets around an IPv6 address dropped)."""
    address = address_family(host)[1]
    return _WILDCARDS.get(address, address)


_SERVE_MODULES = ("mira.entrypoints.web", "mira.app")


def config_from_command_line(argv: Sequence[str]) -> str | None:
    """The config path a Mira serving command line names ("config.json" if none); else None."""
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else ""
        module = arg == "-m" and following in _SERVE_MODULES
        if module or (Path(arg).name == "mira" and following == "serve"):
            return next((a for a in argv[i + 2 :] if not a.startswith("-")), "config.json")
    return None


def running_service_config(proc: Path = Path("/proc")) -> str | None:
    """The config path of the first Mira process on this machine (PID 1 first), made absolute."""
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
            path = config_from_command_line([a.decode(errors="replace") for a in argv if a])
            if path is not None:
                return os.path.join(os.readlink(proc / str(pid) / "cwd"), path)
        except OSError:  # gone, or another user's process
            continue
    return None


def healthcheck(path: str | None = None, timeout: float = 2.0) -> int:
    """Exit 0 when GET /health answers 200 at the configured address (the management
    listener when there is one), else 1 saying why."""
    path = path or running_service_config() or "config.json"
    snapshot = read_config_file(path)
    if snapshot.text is None:
        return _unhealthy(f"cannot tell the address: {snapshot.error}")
    result = load_settings(snapshot.text, path, os.environ)
    if result.settings is None:
        return _unhealthy(f"cannot tell the address: {path} is invalid: {'; '.join(result.errors)}")
    server, management = result.settings.server, result.settings.management
    if management.port is not None:  # the probes are served there, and not on server.port
        host, port = probe_address(management.host or server.host), management.port
    else:
        host, port = probe_address(server.host), server.port
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/health"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health", headers={"User-Agent": "mira-healthcheck"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return _unhealthy(f"{url}: {exc or type(exc).__name__}")
    finally:
        conn.close()
    if status != 200:
        return _unhealthy(f"{url} answered {status}")
    print(f"healthy: {url} answered 200")
    return 0


def _unhealthy(reason: str) -> int:
    print(f"unhealthy: {reason}", file=sys.stderr)
    return 1
