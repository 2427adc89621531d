"""Secrets: cost of a cached read on the request path, and rotation-to-in-use latency per backend.

Run: `.venv/bin/python benchmarks/secrets_bench.py` (starts its own OpenBao and local TLS
Kubernetes API server on 127.0.0.1; the env backend has no rotation to measure).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test servers live under tests/

import structlog  # noqa: E402
from dependency_injector import providers  # noqa: E402

from mira.adapters.log_sink import LogSink  # noqa: E402
from mira.adapters.structlog_logging import LogPipeline  # noqa: E402
from mira.container import Container  # noqa: E402
from mira.domain.commands import ApplyConfig  # noqa: E402
from mira.domain.config.loading import LoadResult  # noqa: E402
from mira.domain.config.model import (  # noqa: E402
    GithubSettings,
    IntegrationsSettings,
    SecretsSettings,
    Settings,
)
from mira.domain.ports import SecretsBackend  # noqa: E402
from mira.service_layer.secrets import SecretsManager  # noqa: E402
from mira.testing import InMemorySecretsBackend  # noqa: E402

REF = "secret://github-credentials:token"
Writer = Callable[[str], None]


def running(backend: SecretsBackend, secrets: SecretsSettings) -> tuple[Container, SecretsManager]:
    """The service's own wiring (container, bus, runtime handlers) with its config applied."""
    settings = Settings(
        integrations=IntegrationsSettings(github=GithubSettings(token=REF)), secrets=secrets
    )
    container = Container()
    container.settings.override(providers.Object(settings))
    container.secrets_backend.override(providers.Object(backend))
    quiet = LogSink()
    quiet.open("/dev/null")
    container.logging.override(providers.Object(LogPipeline(sink=quiet)))
    container.runtime()  # wires the bus's handlers
    manager: SecretsManager = container.secrets()
    fetches, failures = manager.stage(settings)
    assert not failures, failures
    command = ApplyConfig(
        correlation_id="bench",
        at=time.time(),
        source="bench",
        parsed=LoadResult(settings, ()),
        fetches=fetches,
        backend=backend.name,
    )
    container.bus().handle(command)
    return container, manager


def cached_read(rounds: int, number: int) -> None:
    backend = InMemorySecretsBackend({"github-credentials": {"token": "v0"}})
    container, manager = running(backend, SecretsSettings())
    plain = {REF: "v0"}
    get, lookup = manager.get, plain.get
    ours, base = [], []
    for _ in range(rounds):  # alternate A/B so drift hits both alike
        ours.append(timeit.timeit(lambda: get(REF), number=number) / number * 1e9)
        base.append(timeit.timeit(lambda: lookup(REF), number=number) / number * 1e9)
    o, b = statistics.median(ours), statistics.median(base)
    print(f"cached read  SecretsManager.get: {o:6.1f} ns   (goal <= 1000 ns)")
    print(f"baseline     dict.get          : {b:6.1f} ns   ratio {o / b:.2f}x  (incl. lambda call)")
    container.shutdown_resources()


def rotation_latency(
    name: str, backend: SecretsBackend, write: Writer, settings: SecretsSettings, trials: int
) -> None:
    write("value-0")
    container, manager = running(backend, settings)
    manager.start(settings)
    samples: list[float] = []
    try:
        for i in range(1, trials + 1):
            value = f"value-{i}"
            started = time.perf_counter()
            write(value)
            deadline = started + 5.0
            while (got := manager.get(REF)) is None or got.reveal() != value:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{name}: rotation {i} not in use after 5 s")
                time.sleep(0.0005)
            samples.append((time.perf_counter() - started) * 1000)
            time.sleep(random.uniform(0.02, 0.02 + settings.refresh_interval))  # any phase
    finally:
        manager.stop()
        container.shutdown_resources()
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))]
    print(
        f"rotation→in use  {name:<34} n={len(samples):3d}  p50 {statistics.median(samples):7.1f} ms"
        f"  p95 {p95:7.1f} ms  max {samples[-1]:7.1f} ms"
    )


def bench_vault(trials: int, interval: float) -> None:
    from tests.integration.openbao_server import bao_process

    from mira.adapters.vault_secrets import VaultSecretsBackend
    from mira.domain.config.model import VaultSettings

    with bao_process() as server:
        kv2 = server.client.secrets.kv.v2

        def write(value: str) -> None:
            kv2.create_or_update_secret("github-credentials", secret={"token": value})

        backend = VaultSecretsBackend(VaultSettings(url=server.url, token=server.root_token), {})
        settings = SecretsSettings(auto_refresh=True, refresh_interval=interval)
        rotation_latency(f"vault (auto_refresh, {interval:g} s)", backend, write, settings, trials)


def bench_kubernetes(trials: int) -> None:
    from tests.integration.k8s_api_server import (
        FakeKubeApiServer,
        in_cluster_files,
        write_self_signed_cert,
    )

    from mira.adapters.kubernetes_secrets import KubernetesSecretsBackend
    from mira.domain.config.model import KubernetesSecretsSettings

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = write_self_signed_cert(Path(tmp))
        server = FakeKubeApiServer(cert, key)
        server.start()
        try:
            files = in_cluster_files(Path(tmp), server)
            backend = KubernetesSecretsBackend(
                KubernetesSecretsSettings(),
                files["environ"],
                token_file=files["token_filename"],
                ca_file=files["cert_filename"],
            )
            rotation_latency(
                "kubernetes (watch, local TLS API)",
                backend,
                lambda v: server.put_secret("github-credentials", {"token": v}) and None,
                SecretsSettings(refresh_interval=0.1),  # no auto_refresh: only the gap uses it
                trials,
            )
        finally:
            server.stop()


def bench_file(trials: int) -> None:
    from tests.integration.test_file_secrets import KubeletVolume

    from mira.adapters.file_secrets import FileSecretsBackend
    from mira.domain.config.model import FileSecretsSettings

    with tempfile.TemporaryDirectory() as tmp:
        volume = KubeletVolume(Path(tmp) / "github-credentials")
        backend = FileSecretsBackend(FileSecretsSettings(directory=tmp))
        rotation_latency(
            "file (watch, kubelet ..data swap)",
            backend,
            lambda v: volume.publish({"token": v}),
            SecretsSettings(refresh_interval=0.1),
            trials,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--vault-interval", type=float, default=0.5)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # no log noise
    cached_read(rounds=7, number=200_000)
    print("rotation→in use  env                                not applicable (read at start)")
    bench_vault(args.trials, args.vault_interval)
    bench_kubernetes(args.trials)
    bench_file(args.trials)


if __name__ == "__main__":
    main()
