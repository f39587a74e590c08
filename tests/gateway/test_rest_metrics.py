"""GET /metrics through the real Envoy: REST calls are counted like gRPC ones (they reach
the server as gRPC calls), refusals with the code the REST caller's status maps from."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _samples(client) -> dict[tuple, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _handled(samples, method: str, code: str) -> float:
    return sum(value for (name, labels), value in samples.items()
               if name == "grpc_server_handled_total" and ("grpc_method", method) in labels
               and ("grpc_code", code) in labels)


async def _until_idle(client) -> dict[tuple, float]:
    """The samples once no call is in flight: the status reaches a client a moment before
    the server has counted it."""
    for _ in range(100):
        samples = await _samples(client)
        in_flight = sum(v for (name, _), v in samples.items() if name == "grpc_server_in_flight_calls")
        if in_flight == 0:
            return samples
        await asyncio.sleep(0.05)
    raise AssertionError("calls stayed in flight")


async def test_rest_calls_are_counted_by_method_and_code(client) -> None:
    before = await _until_idle(client)
    for _ in range(3):
        assert (await client.get("/v1/domains")).status_code == 200
    missing = await client.get("/api/v1/functions/no_such_function/versions/v1")
    assert missing.status_code == 404
    after = await _until_idle(client)
    assert _handled(after, "ListDomains", "OK") - _handled(before, "ListDomains", "OK") == 3
    assert _handled(after, "GetVersion", "NOT_FOUND") - _handled(before, "GetVersion", "NOT_FOUND") == 1
    # no series names the function a caller asked about
    assert not any("no_such_function" in str(labels) for _, labels in after)
