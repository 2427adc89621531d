"""The real service's /metrics: labels fed from the request line stay a bounded set."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServiceProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir: Path = tmp_path_factory.mktemp("labels")
    svc = ServiceProcess(workdir, {"logging": {"level": "WARNING"}})
    try:
        yield svc.start()
    finally:
        svc.stop()


def _request(service: ServiceProcess, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_invented_request_methods_count_under_one_method_label(service: ServiceProcess) -> None:
    for i in range(300):
        _request(service, f"INVENTED{i}", "/health")
        _request(service, f"M{i}", "/no/such/path")
    assert _request(service, "GET", "/health") == 200
    status, _, body = service.get("/metrics")
    assert status == 200
    methods: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "mira_http_requests_total":
                method = sample.labels["method"]
                methods[method] = methods.get(method, 0) + sample.value
    assert set(methods) <= {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"}
    assert methods["other"] == 600
    assert len(body) < 50_000
