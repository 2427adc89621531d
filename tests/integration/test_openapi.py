"""The OpenAPI document the service serves at /openapi.json, and schemathesis driving the message
API from it over loopback HTTP to the real service (a subprocess): no input yields a 5xx, and
every answer is one the document describes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mira.plans.domain import MAX_GOALS
from tests.support import ServiceProcess, running_service

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir: Path = tmp_path_factory.mktemp("openapi")
    with running_service(workdir, {"logging": {"level": "WARNING", "json_format": True}}) as svc:
        yield svc


def test_the_document_describes_each_message_type_with_its_bounds(
    service: ServiceProcess,
) -> None:
    status, headers, body = service.get("/openapi.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/api/v1/messages"]["post"]
    variants = operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    by_type = {v["properties"]["type"]["enum"][0]: v["properties"]["data"] for v in variants}
    assert set(by_type) == {"generate_plan", "publish_plan"}
    assert by_type["generate_plan"]["properties"]["goals"]["maxItems"] == MAX_GOALS
    assert {"200", "400", "409", "413", "415", "502"} <= set(operation["responses"])
    assert {"/health", "/ready", "/metrics", "/openapi.json"} <= set(document["paths"])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_5xx_and_only_documented_answers(
    service: ServiceProcess, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operation = schema["/api/v1/messages"]["POST"]

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=service.url, checks=CHECKS, timeout=30)

    run()
