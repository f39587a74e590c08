"""Enhance, EnhanceTranspiled, EnhanceExternal against a real server and SQLite file."""

from __future__ import annotations

import importlib.util

import grpc
import pytest

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb
from support import details, violated_fields

PRICE = '''
import math

def total_price(unit_price: float, quantity: int, discount: float = 0.0) -> float:
    """Price after discount, rounded up to the cent."""
    return math.ceil(unit_price * quantity * (1 - discount) * 100) / 100
'''


async def log_head(stub) -> int:
    response = await stub.ListEvents(pb.ListEventsRequest(page_size=1000))
    return response.events[-1].position if response.events else 0


def load(code: str, tmp_path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_enhance_stores_v1_and_the_code_behaves_like_the_original(stub, tmp_path):
    response = await stub.Enhance(pb.EnhanceRequest(function_name="total_price", original_code=PRICE))
    assert response.version == "v1"
    assert response.function_name == "total_price"
    assert response.metadata.domain == "base_reliability"
    assert response.metadata.optimizations
    assert 0 < response.metadata.safety_level <= 1
    original = load(PRICE, tmp_path, "original_price")
    enhanced = load(response.enhanced_code.python, tmp_path, "enhanced_price")
    for args in [(9.99, 3), (0.1, 7, 0.25), (100.0, 0)]:
        assert enhanced.total_price(*args) == original.total_price(*args)
    events = (await stub.ListEvents(pb.ListEventsRequest(function_name="total_price"))).events
    assert [e.type for e in events] == ["enhancement.completed"]
    assert events[0].payload["version"] == "v1"


async def test_same_content_returns_the_stored_version_and_new_content_makes_v2(stub):
    first = await stub.Enhance(pb.EnhanceRequest(function_name="total_price", original_code=PRICE))
    again = await stub.Enhance(pb.EnhanceRequest(function_name="total_price", original_code=PRICE))
    assert again.version == "v1"
    assert again.enhanced_code.python == first.enhanced_code.python
    head = await log_head(stub)
    changed = await stub.Enhance(
        pb.EnhanceRequest(function_name="total_price", original_code=PRICE, optimize_for="performance")
    )
    assert changed.version == "v2"
    assert await log_head(stub) == head + 1
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="total_price"))
    assert [v.version for v in listing.versions] == ["v1", "v2"]
    assert listing.current_version == "v2"
    assert listing.versions[1].parent_version == "v1"
    assert '_POET_VERSION = "v2"' in changed.enhanced_code.python  # executions report their version


async def test_request_id_replay_writes_nothing_and_reuse_with_other_content_conflicts(stub):
    request = pb.EnhanceRequest(function_name="total_price", original_code=PRICE, request_id="req-1")
    first = await stub.Enhance(request)
    head = await log_head(stub)
    replay = await stub.Enhance(request)
    assert replay == first
    assert await log_head(stub) == head
    other = pb.EnhanceRequest(function_name="total_price", original_code=PRICE + "\n# changed\n", request_id="req-1")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Enhance(other)
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(failure.value)["ErrorInfo"].reason == "REQUEST_ID_REUSED"
    assert await log_head(stub) == head


async def test_concurrent_identical_requests_store_one_version(stub):
    import asyncio

    request = pb.EnhanceRequest(function_name="total_price", original_code=PRICE)
    responses = await asyncio.gather(*(stub.Enhance(request) for _ in range(8)))
    assert {r.version for r in responses} == {"v1"}
    listing = await stub.ListVersions(pb.ListVersionsRequest(function_name="total_price"))
    assert len(listing.versions) == 1


BAD_REQUESTS = [
    (pb.EnhanceRequest(original_code=PRICE), {"function_name"}),
    (pb.EnhanceRequest(function_name="total_price"), {"original_code"}),
    (pb.EnhanceRequest(function_name="total price", original_code=PRICE), {"function_name"}),
    (pb.EnhanceRequest(function_name="total_price", original_code="def total_price(:\n  pass"), {"original_code"}),
    (pb.EnhanceRequest(function_name="missing", original_code=PRICE), {"function_name"}),
    (pb.EnhanceRequest(function_name="total_price", original_code=PRICE, domain="astrology"), {"domain"}),
    (pb.EnhanceRequest(function_name="total_price", original_code=PRICE, optimize_for="vibes"), {"optimize_for"}),
    (pb.EnhanceRequest(function_name="f", original_code="def f():\n    return 1\n" + "#" * 600_000), {"original_code"}),
]


@pytest.mark.parametrize("request_, fields", BAD_REQUESTS)
async def test_invalid_enhance_requests_are_rejected_with_field_details_and_store_nothing(stub, request_, fields):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Enhance(request_)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(failure.value) == fields
    assert details(failure.value)["ErrorInfo"].domain == "poet.v1"
    assert "Traceback" not in failure.value.details()
    assert await log_head(stub) == 0


async def test_syntax_error_names_the_line(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Enhance(pb.EnhanceRequest(function_name="f", original_code="x = 1\ndef f(:\n    pass\n"))
    (violation,) = details(failure.value)["BadRequest"].field_violations
    assert "line 2" in violation.description


async def test_enhance_transpiled_returns_annotated_dana_and_echoes_the_transpilation(stub):
    dana = "def total_price(unit_price: float, quantity: int, discount: float = 0.0) -> float:\n    return unit_price * quantity\n"
    response = await stub.EnhanceTranspiled(
        pb.EnhanceTranspiledRequest(
            transpilation_id="tr-42",
            agent_id="agent-7",
            dana_source=dana,
            python_code=PRICE,
            function_name="total_price",
            domain="financial_services",
        )
    )
    assert response.success
    assert response.transpilation_id == "tr-42"
    assert response.version == "v1"
    assert response.poet_metadata.domain == "financial_services"
    assert "@poet(" in response.enhanced_code.dana
    assert "def total_price" in response.enhanced_code.python


async def test_enhance_transpiled_reports_code_errors_against_python_code(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.EnhanceTranspiled(
            pb.EnhanceTranspiledRequest(transpilation_id="t", python_code="def f(:", function_name="f")
        )
    assert violated_fields(failure.value) == {"python_code"}


async def test_enhance_external_finds_the_function_and_maps_objectives(stub):
    response = await stub.EnhanceExternal(
        pb.EnhanceExternalRequest(function_code=PRICE, objectives=["cost", "performance"], client_id="mlflow")
    )
    assert response.function_name == "total_price"
    got = await stub.GetVersion(pb.GetVersionRequest(function_name="total_price", version="v1"))
    assert got.version.optimize_for == "performance"


async def test_enhance_external_without_any_function_is_invalid(stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.EnhanceExternal(pb.EnhanceExternalRequest(function_code="x = 1\n"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(failure.value) == {"function_code"}


async def test_async_function_stays_async(stub, tmp_path):
    code = "import asyncio\n\nasync def fetch(n: int) -> int:\n    await asyncio.sleep(0)\n    return n * 2\n"
    response = await stub.Enhance(pb.EnhanceRequest(function_name="fetch", original_code=code))
    module = load(response.enhanced_code.python, tmp_path, "enhanced_fetch")
    import inspect

    assert inspect.iscoroutinefunction(module.fetch)
    assert await module.fetch(21) == 42


async def test_list_domains(stub):
    response = await stub.ListDomains(pb.ListDomainsRequest())
    names = [d.name for d in response.domains]
    assert "base_reliability" in names and "ml_monitoring" in names
    assert all(d.description for d in response.domains)
    assert any(d.parameters for d in response.domains)
