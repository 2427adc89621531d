"""Prometheus metrics on a registry of Mira's own (not the process-global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mira.adapters.log_sink import LogSink
from mira.adapters.request_metrics import RequestMetrics
from mira.domain.state import Phase, RuntimeState

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric Mira exports; adapters record through these attributes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http = RequestMetrics(BUCKETS)
        r.register(self.http)
        self.in_flight = Gauge(
            "mira_http_requests_in_flight", "HTTP requests being served", registry=r
        )
        self.server_threads = Gauge(
            "mira_server_threads",
            "The engine's Python threads: started, and parked (waiting aside, out of rotation)",
            ["state"],
            registry=r,
        )
        self.phase = Gauge(
            "mira_lifecycle_phase", "1 for the current lifecycle phase", ["phase"], registry=r
        )
        self.events = Counter("mira_events_total", "Domain events journaled", ["event"], registry=r)
        self.config_reloads = Counter(
            "mira_config_reloads_total", "Configuration reloads", ["result"], registry=r
        )
        self.config_generation = Gauge(
            "mira_config_generation", "Generation of the live configuration", registry=r
        )
        self.config_last_reload = Gauge(
            "mira_config_last_reload_timestamp_seconds",
            "When the configuration was last (re)loaded",
            registry=r,
        )
        self.secret_refresh = Counter(
            "mira_secret_refresh_total", "Secret fetches", ["backend", "result"], registry=r
        )
        self.secret_age = Gauge(
            "mira_secret_age_seconds", "Seconds since the secret was fetched", ["name"], registry=r
        )
        self.shutdown_phase_seconds = Gauge(
            "mira_shutdown_phase_duration_seconds",
            "Duration of each shutdown phase",
            ["phase"],
            registry=r,
        )
        self.integration_requests = Counter(
            "mira_integration_requests_total",
            "Calls to external integrations",
            ["integration", "result"],
            registry=r,
        )
        self.integration_latency = Histogram(
            "mira_integration_request_duration_seconds",
            "Latency of calls to external integrations",
            ["integration"],
            buckets=BUCKETS,
            registry=r,
        )
        for phase in Phase:
            self.phase.labels(phase.value).set(0)
        self._journal: _JournalCollector | None = None

    def track_token_ttl(self, ttl: Callable[[], float | None]) -> None:
        """mira_vault_token_ttl_seconds: +Inf for a token that never expires; no sample while
        unknown (before the first login, or a backend without a token)."""
        self.registry.register(_TokenTtlCollector(ttl))

    def track_log_sink(self, sink: LogSink) -> None:
        """Export the sink's write failures and dropped lines (a full disk)."""
        self.registry.register(_LogSinkCollector(sink))

    def track_journal(self, degraded: Callable[[], bool], position: Callable[[], int]) -> None:
        """mira_journal_degraded (1 while events are kept in memory only) and the position."""
        if self._journal is None:
            self._journal = _JournalCollector(degraded, position)
            self.registry.register(self._journal)
        self._journal.sources = degraded, position

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.observe(method, route, status, seconds)

    def observe_state(self, state: RuntimeState) -> None:
        for phase in Phase:
            self.phase.labels(phase.value).set(1 if phase is state.phase else 0)
        self.config_generation.set(state.config_generation)
        if state.last_reload_at is not None:
            self.config_last_reload.set(state.last_reload_at)

    def watch_threads(self, threads: Callable[[], tuple[int, int]]) -> None:
        """mira_server_threads from the engine's (started, parked) counts."""
        self.server_threads.labels(state="started").set_function(lambda: float(threads()[0]))
        self.server_threads.labels(state="parked").set_function(lambda: float(threads()[1]))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LogSinkCollector(Collector):
    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def collect(self) -> Iterable[Metric]:
        errors = CounterMetricFamily(
            "mira_log_write_errors", "Log writes that failed (a full disk, a broken pipe)"
        )
        errors.add_metric([], self._sink.write_errors)
        dropped = CounterMetricFamily(
            "mira_log_lines_dropped", "Log lines lost because their write failed"
        )
        dropped.add_metric([], self._sink.dropped_lines)
        return [errors, dropped]


class _JournalCollector(Collector):
    def __init__(self, degraded: Callable[[], bool], position: Callable[[], int]) -> None:
        self.sources = degraded, position

    def collect(self) -> Iterable[Metric]:
        is_degraded, last = self.sources
        degraded = GaugeMetricFamily(
            "mira_journal_degraded", "1 while the event journal file cannot be written"
        )
        degraded.add_metric([], 1.0 if is_degraded() else 0.0)
        position = GaugeMetricFamily("mira_journal_position", "Position of the last event")
        position.add_metric([], float(last()))
        return [degraded, position]


class _TokenTtlCollector(Collector):
    def __init__(self, ttl: Callable[[], float | None]) -> None:
        self._ttl = ttl

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "mira_vault_token_ttl_seconds", "Remaining TTL of Mira's Vault token"
        )
        try:
            value = self._ttl()
        except Exception:
            value = None
        if value is not None:
            family.add_metric([], value)
        return [family]
