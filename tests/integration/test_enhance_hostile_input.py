"""Hostile input to the three Enhance RPCs against a real server: INVALID_ARGUMENT
with a BadRequest naming the code field (never INTERNAL, nor RESOURCE_EXHAUSTED from
an error too big for gRPC's trailers), nothing stored, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb
from support import details
from test_enhance import load, log_head


def calls(code: str) -> list[tuple[str, object, str]]:
    """(RPC, request, the field holding the code) for each Enhance RPC."""
    return [
        ("Enhance", pb.EnhanceRequest(function_name="f", original_code=code), "original_code"),
        ("EnhanceExternal", pb.EnhanceExternalRequest(function_code=code, client_id="c"), "function_code"),
        ("EnhanceTranspiled", pb.EnhanceTranspiledRequest(transpilation_id="t-1", function_name="f", python_code=code),
         "python_code"),
    ]


RPCS = ["Enhance", "EnhanceExternal", "EnhanceTranspiled"]

REFUSED = {
    # item 1: ast.unparse recursed past Python's limit (RecursionError: INTERNAL)
    "deep default": ("def f(x=" + "1 + " * 600 + "1):\n    return x\n", "nest deeper than 200 levels"),
    "deep annotation": ("def f(x: " + "int | " * 600 + "int):\n    return x\n", "nest deeper than 200 levels"),
    "deep decorator": ("@" + "a." * 600 + "b\ndef f(x):\n    return x\n", "nest deeper than 200 levels"),
    # item 2: the message quoted the whole line; its trailers overflowed (RESOURCE_EXHAUSTED)
    "syntax error on a 100 KB line": ("def f(x):\n    return x\ny = " + "1 + " * 25_000 + "* 2\n", "line 3"),
    "unterminated non-ASCII 100 KB line": ('def f(x):\n    return x\ny = "' + "é" * 60_000 + "\n", "line 3"),
    # item 3: 188 KB became 3.3 MB of enhanced code after 20 s of generation
    "10,000 parameters": ("def f(" + ", ".join(f"p{i}: int" for i in range(10_000)) + "):\n    return p0\n",
                          "10000 parameters"),
}


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("case", REFUSED, ids=REFUSED.keys())
async def test_hostile_code_is_invalid_argument_naming_the_field_and_stores_nothing(stub, rpc, case) -> None:
    code, says = REFUSED[case]
    _, request, field = next(c for c in calls(code) if c[0] == rpc)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await getattr(stub, rpc)(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()[:300]
    found = details(failure.value)
    (violation,) = found["BadRequest"].field_violations
    assert violation.field == field
    assert says in violation.description and len(violation.description.encode()) <= 1024
    assert len(failure.value.details().encode()) <= 1024
    assert found["ErrorInfo"].domain == "poet.v1"
    assert await log_head(stub) == 0
    assert (await stub.ListDomains(pb.ListDomainsRequest())).domains  # still serving


ACCEPTED = {
    # item 1: Python never reads a string annotation at def time, so POET need not
    # either: one it cannot parse (RecursionError before) is left unchecked.
    "unreadable string annotation": 'def f(x: "' + "-" * 5000 + 'int", n: int = 2) -> int:\n    return n * 2\n',
    # item 4: the gate refused POET's own helpers for CR-only line ends
    "CR line ends": '"""Doubles."""\rimport math\r\r\rdef f(x, n: int = 2) -> int:\r    """Twice n."""\r'
                    "    return math.floor(n * 2)\r",
}


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize("case", ACCEPTED, ids=ACCEPTED.keys())
async def test_odd_but_valid_code_enhances_and_the_module_works(stub, tmp_path, rpc, case) -> None:
    code = ACCEPTED[case]
    _, request, _ = next(c for c in calls(code) if c[0] == rpc)
    response = await getattr(stub, rpc)(request)
    assert response.version == "v1"
    python = response.enhanced_code.python
    assert "\r" not in python
    module = load(python, tmp_path, f"hostile_{rpc}")
    assert module.f("anything") == 4 and module.f(None, n=5) == 10
    # n's annotation is still checked: by default a violation is observed (counted), not refused;
    # what the call does is the original's business (this body may refuse a str itself).
    try:
        module.f(1, n="5")
    except TypeError as error:
        assert "must be int" not in str(error)
    assert module.f.poet_metrics["contract_violations"] >= 1
    events = (await stub.ListEvents(pb.ListEventsRequest(function_name="f"))).events
    assert [e.type for e in events] == ["enhancement.completed"]
    assert events[0].payload["original_code"] == code  # stored as sent


async def test_an_error_with_thousands_of_violations_still_reaches_the_client(stub) -> None:
    events = [events_pb2.Event(type=f"Not A Type {i}", function_name="not a name") for i in range(1000)]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.PublishEvents(pb.PublishEventsRequest(events=events))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(failure.value)["BadRequest"].field_violations
    assert violations[0].field == "events[0].type" and 1 <= len(violations) < 2000
    assert await log_head(stub) == 0


async def test_hostile_code_with_another_problem_lists_both(stub) -> None:
    code, says = REFUSED["deep default"]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Enhance(pb.EnhanceRequest(function_name="f", original_code=code, domain="astrology"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = {v.field: v.description for v in details(failure.value)["BadRequest"].field_violations}
    assert set(violations) == {"domain", "original_code"} and says in violations["original_code"]


async def test_the_generator_limits_come_from_the_settings(tmp_path) -> None:
    from poet_grpc._gen.poet.v1 import poet_service_pb2_grpc
    from poet_grpc.api.server import create_server
    from poet_grpc.config import Settings

    settings = Settings(grpc_listen="127.0.0.1:0", gateway=False, db=tmp_path / "limits.db", max_parameters=3,
                        max_generated_bytes=200_000)
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            await stub.Enhance(pb.EnhanceRequest(function_name="f", original_code="def f(a, b, c):\n    return a\n"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Enhance(pb.EnhanceRequest(function_name="g", original_code="def g(a, b, c, d):\n    return a\n"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "3" in details(caught.value)["BadRequest"].field_violations[0].description
    finally:
        await server.stop(grace=None)
