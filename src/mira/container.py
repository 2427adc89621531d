"""The composition root: one dependency-injector container wires every adapter."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from dependency_injector import containers, providers

from mira.adapters.bearer_auth import BearerTokens
from mira.adapters.durable_journal import DurableJournal
from mira.adapters.env_secrets import EnvSecretsBackend
from mira.adapters.flask_web import create_app
from mira.adapters.kubernetes_mount import subpath_mount_warning
from mira.adapters.log_sink import Redactor
from mira.adapters.management_web import create_management_app
from mira.adapters.memory_journal import InMemoryJournal
from mira.adapters.prometheus_metrics import Metrics
from mira.adapters.structlog_logging import LogPipeline
from mira.adapters.system_clock import SystemClock, UuidIds
from mira.domain import events as ev
from mira.domain.config.model import (
    FileSecretsSettings,
    JournalSettings,
    KubernetesSecretsSettings,
    Settings,
    VaultSettings,
)
from mira.domain.ports import EventJournal, SecretsBackend
from mira.plans import wiring as plans
from mira.service_layer.bus import MessageBus
from mira.service_layer.config_effects import ConfigEffects
from mira.service_layer.config_reload import ConfigReloader
from mira.service_layer.config_subscriptions import ConfigSubscriptions
from mira.service_layer.messages import MessageHandlers
from mira.service_layer.rollout import Rollout
from mira.service_layer.runtime import Runtime
from mira.service_layer.secret_cache import SecretCache
from mira.service_layer.secret_fetch import SecretFetcher, SecretStaging
from mira.service_layer.secrets import SecretCallbacks, SecretsManager
from mira.service_layer.shutdown import ShutdownHooks
from mira.service_layer.snapshots import build_snapshot

BUILTIN_BACKENDS = ("env", "vault", "kubernetes", "file")


def backend_key(settings: Settings) -> str:
    name = settings.secrets.backend
    return name if name in BUILTIN_BACKENDS else "custom"


def _vault(settings: VaultSettings, environ: Mapping[str, str]) -> SecretsBackend:
    from mira.adapters.vault_secrets import VaultSecretsBackend

    return VaultSecretsBackend(settings, environ)


def _kubernetes(settings: KubernetesSecretsSettings, environ: Mapping[str, str]) -> SecretsBackend:
    from mira.adapters.kubernetes_secrets import KubernetesSecretsBackend

    return KubernetesSecretsBackend(settings, environ)


def _file(settings: FileSecretsSettings) -> SecretsBackend:
    from mira.adapters.file_secrets import FileSecretsBackend

    return FileSecretsBackend(settings)


def load_backend_class(dotted: str) -> SecretsBackend:
    """Build a SecretsBackend subclass named `package.module.Class` or `package.module:Class`."""
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        module_name, _, attr = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"secrets.backend: cannot load {dotted!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, SecretsBackend)):
        raise ValueError(f"secrets.backend: {dotted!r} is not a SecretsBackend subclass")
    return cls()


def _event_metrics(metrics: Metrics) -> Callable[[ev.Event], None]:
    results = {
        ev.ConfigLoaded: "applied",
        ev.ConfigChanged: "applied",
        ev.ConfigRejected: "rejected",
        ev.ConfigUnchanged: "unchanged",
        ev.ConfigNeedsRestart: "restart_required",
    }

    def observe(event: ev.Event) -> None:
        metrics.events.labels(event.name).inc()
        result = results.get(type(event))
        if result is not None:
            metrics.config_reloads.labels(result).inc()
        if isinstance(event, ev.Stopped):
            for phase, seconds in event.phase_durations:
                metrics.shutdown_phase_seconds.labels(phase).set(seconds)

    return observe


def _logging(
    settings: Settings, redactor: Redactor, correlation_id: str, metrics: Metrics
) -> Iterator[LogPipeline]:
    pipeline = LogPipeline(redactor=redactor)
    pipeline.configure(settings.logging, default_correlation_id=correlation_id)
    metrics.track_log_sink(pipeline.sink)
    yield pipeline
    pipeline.flush()


def _journal(
    settings: JournalSettings, redactor: Redactor, metrics: Metrics, checks: dict[str, Any]
) -> Iterator[EventJournal]:
    """`journal.path` null: in memory (as before); else the SQLite file, opened and checked."""
    if settings.path is None:
        memory = InMemoryJournal(maxlen=10_000)
        metrics.track_journal(lambda: False, memory.__len__)
        yield memory
        return
    durable = DurableJournal(
        settings.path, settings.max_events, redact=lambda text: redactor(text.encode()).decode()
    )
    durable.open()
    metrics.track_journal(lambda: durable.degraded, lambda: durable.position)
    checks["journal"] = durable.readiness
    yield durable
    durable.close()


def _bus(journal: EventJournal, metrics: Metrics) -> Iterator[MessageBus]:
    bus = MessageBus(journal)
    bus.on_state(metrics.observe_state)

    def track_age(event: ev.SecretLoaded) -> None:
        name = event.secret

        def age() -> float:
            status = bus.state.secrets.get(name)
            fetched = status.fetched_at if status else None
            return time.time() - fetched if fetched is not None else float("nan")

        metrics.secret_age.labels(name).set_function(age)

    bus.subscribe(ev.SecretLoaded, track_age)
    bus.start()
    yield bus
    bus.stop()


def _fetch_metrics(metrics: Metrics) -> Callable[[str, bool], None]:
    def observe(backend: str, ok: bool) -> None:
        metrics.secret_refresh.labels(backend, "ok" if ok else "error").inc()

    return observe


def _secrets_manager(
    fetcher: SecretFetcher,
    cache: SecretCache,
    bus: MessageBus,
    clock: SystemClock,
    ids: UuidIds,
    callbacks: SecretCallbacks,
    metrics: Metrics,
) -> SecretsManager:
    manager = SecretsManager(fetcher, cache, bus, clock, ids, callbacks)

    metrics.track_token_ttl(lambda: manager.backend.token_ttl_seconds())
    return manager


def _live_settings(bus: MessageBus) -> Callable[[], Settings | None]:
    return lambda: bus.state.settings


def _integration_metrics(metrics: Metrics) -> Callable[[str, str, float], None]:
    def observe(integration: str, result: str, seconds: float) -> None:
        metrics.integration_requests.labels(integration, result).inc()
        metrics.integration_latency.labels(integration).observe(seconds)

    return observe


def _watcher_factory() -> Callable[..., Any]:
    from mira.adapters.watchdog_config import ConfigWatcher

    return ConfigWatcher


def _server(
    app: Any, settings: Settings, metrics: Metrics, management: Callable[[], Any]
) -> Iterator[Any]:
    from mira.adapters.granian_server import GranianServer

    server = GranianServer(app, **engine_settings(settings))
    metrics.in_flight.set_function(lambda: float(server.in_flight))
    metrics.watch_threads(lambda: server.threads)
    yield from _with_management(server, settings, management)


def engine_settings(settings: Settings) -> dict[str, Any]:
    """GranianServer's keyword arguments from server.*."""
    s = settings.server
    return {
        "host": s.host,
        "port": s.port,
        "threads": s.threads,
        "max_threads": s.max_threads,
        "request_queue_size": s.request_queue_size,
        "max_connections": s.max_connections,
        "header_timeout": s.header_timeout,
        "body_timeout": s.body_timeout,
        "max_body_bytes": s.max_body_bytes,
        "max_header_bytes": s.max_header_bytes,
    }


def _with_management(server: Any, settings: Settings, app: Callable[[], Any]) -> Iterator[Any]:
    """`server` alone, or with the management listener beside it (closed last)."""
    m = settings.management
    if m.port is None:
        yield server
        server.stop(timeout=1.0)
        return
    from mira.adapters.granian_server import GranianServer
    from mira.adapters.management_listener import ManagedServer

    where = {"host": m.host or settings.server.host, "port": m.port, "threads": 4}
    listener = GranianServer(app(), **{**engine_settings(settings), **where})
    managed = ManagedServer(server, listener)
    yield managed
    managed.close(timeout=1.0)


def main_port_probes(settings: Settings) -> str:
    """What server.port answers of /health, /ready, /metrics (see `create_app`)."""
    m = settings.management
    if m.port is None:
        return "detailed"
    return "public" if m.public_ready else "none"


def _token_texts(bus: Any, pick: Callable[[Settings], Any]) -> Callable[[], tuple[str, ...]]:
    """The configured tokens now (the committed snapshot's, in a worker)."""

    def texts() -> tuple[str, ...]:
        settings = bus.state.settings
        value = pick(settings) if settings is not None else None
        return () if value is None else (value,) if isinstance(value, str) else tuple(value)

    return texts


def _api_tokens(bus: Any) -> Callable[[], tuple[str, ...]]:
    return _token_texts(bus, lambda s: s.server.api_tokens)


def _management_token(bus: Any) -> Callable[[], tuple[str, ...]]:
    return _token_texts(bus, lambda s: s.management.token)


def _journal_file(settings: Settings) -> Callable[[], str | None]:
    """The file /admin reads: the journal.path this process opened (a change needs a restart)."""
    path = settings.journal.path
    return lambda: path


def _memory_events(journal: EventJournal) -> Callable[[], list[tuple[int, object]]] | None:
    """What /admin reads with journal.path null: the in-memory journal's events."""
    return journal.entries if isinstance(journal, InMemoryJournal) else None


def warn_open_api(settings: Settings) -> None:
    """At start-up (the supervisor's, with workers): say once that anyone may call the API."""
    if not settings.server.api_tokens:
        structlog.get_logger("mira.app").warning(
            "server.api_tokens is not set: POST /api/v1/messages is open to anyone who "
            "reaches server.port"
        )


def worker_count(settings: Settings) -> int:
    """`server.workers`, with "auto" as the CPUs this process may run on."""
    from mira.adapters.worker_pool import cpu_count

    workers = settings.server.workers
    return cpu_count() if workers == "auto" else int(workers)


def _process_model(settings: Settings) -> str:
    return "supervisor" if worker_count(settings) > 1 else "single"


def _worker_pool(
    settings: Settings,
    snapshot: Callable[[], Any],
    bus: MessageBus,
    metrics: Metrics,
    management: Callable[[], Any],
) -> Iterator[Any]:
    from mira.adapters.worker_pool import WorkerPool

    s = settings.server
    pool = WorkerPool(
        host=s.host,
        port=s.port,
        backlog=s.request_queue_size,
        count=worker_count(settings),
        worker_timeout=s.worker_timeout,
        snapshot=snapshot,
        bus_status=lambda: bus.stalled(5.0),
        render_metrics=metrics.render,
    )
    # /metrics on any worker: the supervisor's own metrics plus every worker's requests
    metrics.http.extra_rows = pool.aggregate_rows
    metrics.in_flight.set_function(lambda: float(pool.in_flight))
    metrics.watch_threads(lambda: pool.threads)
    # The supervisor serves the management listener itself: its state, its summed metrics.
    yield from _with_management(pool, settings, management)


def _log_check(logs: LogPipeline) -> Callable[[Settings], list[str]]:
    return lambda settings: logs.check(settings.logging)


class _RolloutSource:
    """The snapshot a new worker starts from: the decided state and the values in use."""

    def __init__(self, cache: SecretCache, state: Callable[[], Any]) -> None:
        self._cache, self._state = cache, state

    def snapshot(self) -> Any:
        return build_snapshot(self._state(), self._cache)


class Container(containers.DeclarativeContainer):
    """Override any provider (`container.secrets_backend.override(...)`) to swap an adapter."""

    settings = providers.Object(Settings())
    config_path = providers.Object("config.json")
    environ = providers.Object(os.environ)
    boot_id = providers.Object("-")

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(UuidIds)
    redactor = providers.Singleton(Redactor)
    metrics = providers.Singleton(Metrics)
    logging = providers.Resource(_logging, settings, redactor, boot_id, metrics)
    readiness_checks: providers.Singleton[dict[str, Any]] = providers.Singleton(dict)
    journal = providers.Resource(
        _journal, settings.provided.journal, redactor, metrics, readiness_checks
    )
    bus = providers.Resource(_bus, journal, metrics)

    secrets_backend = providers.Selector(
        providers.Callable(backend_key, settings),
        env=providers.Singleton(EnvSecretsBackend, environ),
        vault=providers.Singleton(_vault, settings.provided.secrets.vault, environ),
        kubernetes=providers.Singleton(_kubernetes, settings.provided.secrets.kubernetes, environ),
        file=providers.Singleton(_file, settings.provided.secrets.file),
        custom=providers.Singleton(load_backend_class, settings.provided.secrets.backend),
    )
    secret_callbacks = providers.Singleton(SecretCallbacks)
    secret_cache = providers.Singleton(SecretCache, on_values=redactor.provided.set_secrets)
    secret_fetcher = providers.Singleton(
        SecretFetcher,
        secrets_backend,
        providers.Singleton(SecretStaging),
        on_fetch=providers.Callable(_fetch_metrics, metrics),
    )
    secrets = providers.Singleton(
        _secrets_manager, secret_fetcher, secret_cache, bus, clock, ids, secret_callbacks, metrics
    )

    subscriptions = providers.Singleton(ConfigSubscriptions)
    watcher_factory = providers.Callable(_watcher_factory)
    reloader = providers.Singleton(
        ConfigReloader,
        config_path,
        bus.provided.submit,
        clock,
        ids,
        environ,
        subscriptions,
        watcher_factory,
        stage=secrets.provided.stage,
        backend_name=secrets_backend.provided.name,
        checks=providers.List(providers.Callable(_log_check, logging)),
        mount_check=providers.Object(subpath_mount_warning),
    )
    config_effects = providers.Singleton(
        ConfigEffects,
        reloader,
        logging.provided.apply,
        bus.provided.current_state,
    )

    shutdown_hooks = providers.Singleton(ShutdownHooks)

    # The plans app (mira.plans: generate_plan, publish_plan to GitHub/Jira) on this runtime.
    integrations = providers.Singleton(
        plans.plan_integrations,
        secret_cache.provided.get,
        providers.Callable(_live_settings, bus),
        providers.Callable(_integration_metrics, metrics),
        subscriptions,
        shutdown_hooks,
        readiness_checks,
    )
    message_handlers = providers.Singleton(
        plans.plan_messages, providers.Factory(MessageHandlers), integrations.provider
    )
    integration_checks = providers.Callable(plans.doctor_checks, integrations, settings)
    web_app = providers.Singleton(
        create_app,
        bus,
        metrics,
        message_handlers,
        logging,
        max_body_bytes=settings.provided.server.max_body_bytes,
        max_header_bytes=settings.provided.server.max_header_bytes,
        readiness_checks=readiness_checks,
        probes=providers.Callable(main_port_probes, settings),
        api_tokens=providers.Singleton(
            BearerTokens, providers.Callable(_api_tokens, bus), secret_cache.provided.get
        ),
    )
    # /health, /ready, /metrics and /admin on management.port (when it is set)
    management_app = providers.Singleton(
        create_management_app,
        bus,
        metrics,
        logging,
        providers.Singleton(
            BearerTokens, providers.Callable(_management_token, bus), secret_cache.provided.get
        ),
        providers.Callable(_journal_file, settings),
        readiness_checks=readiness_checks,
        memory_events=providers.Callable(_memory_events, journal),
    )
    # One process serving HTTP itself, or a supervisor committing snapshots to N workers.
    process_model = providers.Callable(_process_model, settings)
    rollout_source = providers.Singleton(_RolloutSource, secret_cache, bus.provided.current_state)
    server = providers.Selector(
        process_model,
        single=providers.Resource(_server, web_app, settings, metrics, management_app.provider),
        supervisor=providers.Resource(
            _worker_pool,
            settings,
            rollout_source.provided.snapshot,
            bus,
            metrics,
            management_app.provider,
        ),
    )
    rollout = providers.Selector(
        process_model,
        single=providers.Object(None),
        supervisor=providers.Singleton(
            Rollout,
            server,
            secret_cache,
            bus.provided.current_state,
            bus.provided.submit,
            clock,
            ids,
        ),
    )
    runtime = providers.Singleton(
        Runtime,
        bus=bus,
        secrets=secrets,
        reloader=reloader,
        hooks=shutdown_hooks,
        config_effects=config_effects,
        server_factory=server.provider,
        clock=clock,
        ids=ids,
        observers=providers.List(providers.Callable(_event_metrics, metrics)),
        startup_tasks=providers.List(
            integrations.provided.configure, providers.Object(warn_open_api)
        ),
        journal=journal,
        flush_logs=logging.provided.flush,
        rollout=rollout,
    )
