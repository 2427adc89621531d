"""Lock-free request metrics: what Prometheus scrapes equals what every thread observed."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mira.adapters.prometheus_metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_buckets_are_cumulative_and_inclusive_and_5xx_count_as_errors() -> None:
    metrics = Metrics()
    for seconds in (0.005, 0.0051, 30.0):
        metrics.observe_request("POST", "/api/v1/messages", 500, seconds)
    got = samples(metrics)
    labels = {"method": "POST", "route": "/api/v1/messages", "status": "500"}
    bucket = "mira_http_request_duration_seconds_bucket"
    assert got[key(bucket, le="0.005", **labels)] == 1  # le means <=
    assert got[key(bucket, le="0.01", **labels)] == 2
    assert got[key(bucket, le="10.0", **labels)] == 2
    assert got[key(bucket, le="+Inf", **labels)] == 3
    errors = key("mira_http_request_errors_total", method="POST", route="/api/v1/messages")
    assert got[errors] == 3


def test_invented_methods_and_statuses_share_one_label_value() -> None:
    metrics = Metrics()
    for i in range(18_000):
        metrics.observe_request(f"X{i:05d}", "<unmatched>", 405, 0.001)
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"):
        metrics.observe_request(method, "/health", 200, 0.001)
    metrics.observe_request("GET", "/health", 999, 0.001)
    got = samples(metrics)
    methods = {dict(labels)["method"] for name, labels in got if name == "mira_http_requests_total"}
    assert methods == {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"}
    assert (
        got[key("mira_http_requests_total", method="other", route="<unmatched>", status="405")]
        == 18_000
    )
    assert got[key("mira_http_requests_total", method="GET", route="/health", status="other")] == 1
    assert len(metrics.render()) < 20_000
