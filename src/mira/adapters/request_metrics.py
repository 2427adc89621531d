"""Per-request HTTP metrics without locks: per-thread tallies summed when Prometheus scrapes."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

Key = tuple[str, str, int]
#: Label values the `method` label can take; any other request method counts as `other`, so an
#: invented method per request cannot grow the series without bound (RFC 9110 methods + PATCH).
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER = "other"
#: Statuses outside 100-599 (an app's own status line) share one label value too.
STATUS_OTHER = 0


def add_rows(tallies: list[dict[Key, list[float]]]) -> dict[Key, list[float]]:
    merged: dict[Key, list[float]] = {}
    for tally in tallies:
        for key, row in list(tally.items()):
            total = merged.setdefault(key, [0.0] * len(row))
            for i, value in enumerate(row):
                total[i] += value
    return merged


def encode_rows(rows: dict[Key, list[float]]) -> list[list[Any]]:
    return [[m, r, s, row] for (m, r, s), row in rows.items()]


def decode_rows(data: list[list[Any]]) -> dict[Key, list[float]]:
    return {(str(m), str(r), int(s)): [float(v) for v in row] for m, r, s, row in data}


class RequestMetrics(Collector):
    """mira_http_requests_total, mira_http_request_duration_seconds, ..._errors_total.

    prometheus_client's Counter and Histogram take a lock per update (three per request);
    here each worker thread adds to its own tally (a dict of lists nobody else writes) and
    `collect()` sums the tallies at scrape time.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._buckets = buckets
        #: with workers: the supervisor's summed rows of every worker, added at scrape
        self.extra_rows: Callable[[], dict[Key, list[float]]] | None = None
        self._local = threading.local()
        self._tallies: list[dict[Key, list[float]]] = []
        self._lock = threading.Lock()  # only guards the list of tallies

    def _tally(self) -> dict[Key, list[float]]:
        tally: dict[Key, list[float]] = {}
        self._local.tally = tally
        with self._lock:
            self._tallies.append(tally)
        return tally

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request; `route` must be a route template (a bounded set), never a path."""
        tally = getattr(self._local, "tally", None) or self._tally()
        key = (
            method if method in METHODS else OTHER,
            route,
            status if 100 <= status <= 599 else STATUS_OTHER,
        )
        row = tally.get(key)
        if row is None:
            # bucket counts (the last one is +Inf), then count, then sum
            row = tally[key] = [0.0] * (len(self._buckets) + 3)
        row[bisect_left(self._buckets, seconds)] += 1
        row[-2] += 1
        row[-1] += seconds

    def rows(self) -> dict[Key, list[float]]:
        """This process's tallies summed: (method, route, status) -> buckets, count, sum."""
        with self._lock:
            tallies = list(self._tallies)
        return add_rows(tallies)

    def _merged(self) -> dict[Key, list[float]]:
        rows = self.rows()
        if self.extra_rows is not None:
            rows = add_rows([rows, self.extra_rows()])
        return rows

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "mira_http_requests", "HTTP requests served", labels=["method", "route", "status"]
        )
        latency = HistogramMetricFamily(
            "mira_http_request_duration_seconds",
            "HTTP request latency",
            labels=["method", "route", "status"],
        )
        errors = CounterMetricFamily(
            "mira_http_request_errors",
            "HTTP requests answered with a 5xx status",
            labels=["method", "route"],
        )
        error_totals: dict[tuple[str, str], float] = {}
        for (method, route, status), row in sorted(self._merged().items()):
            labels = [method, route, str(status) if status else OTHER]
            requests.add_metric(labels, row[-2])
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self._buckets, float("inf")), row[:-2], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric(labels, buckets, row[-1])
            if status >= 500:
                error_totals[(method, route)] = error_totals.get((method, route), 0) + row[-2]
        for (method, route), value in error_totals.items():
            errors.add_metric([method, route], value)
        yield requests
        yield latency
        yield errors

    def describe(self) -> Iterator[Metric]:
        return iter(())
