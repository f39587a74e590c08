"""Hostile input to the Enhance RPCs over REST, through a real Envoy to the real
server: 400 with a BadRequest naming the code field (not 500, nor a 502 from an
error too big for gRPC's trailers), nothing stored, the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")

PARAMS = ", ".join(f"p{i}: int" for i in range(10_000))
REFUSED = {
    "deep default": ("def f(x=" + "1 + " * 600 + "1):\n    return x\n", "nest deeper than 200 levels"),
    "deep annotation": ("def f(x: " + "int | " * 600 + "int):\n    return x\n", "nest deeper than 200 levels"),
    "syntax error on a 100 KB line": ("def f(x):\n    return x\ny = " + "1 + " * 25_000 + "* 2\n", "line 3"),
    "unterminated non-ASCII 100 KB line": ('def f(x):\n    return x\ny = "' + "é" * 60_000 + "\n", "line 3"),
    "10,000 parameters": (f"def f({PARAMS}):\n    return p0\n", "10000 parameters"),
}
ACCEPTED = {
    "unreadable string annotation": 'def f(x: "' + "-" * 5000 + 'int", n: int = 2) -> int:\n    return n * 2\n',
    "CR line ends": '"""Doubles."""\rimport math\r\r\rdef f(x, n: int = 2) -> int:\r    return math.floor(n * 2)\r',
}


def call(rpc: str, code: str, name: str = "f") -> tuple[str, dict, str]:
    """(path, JSON body, the field holding the code) of one Enhance RPC over REST."""
    if rpc == "Enhance":
        return "/api/v1/functions/enhance", {"function_name": name, "original_code": code}, "original_code"
    if rpc == "EnhanceExternal":
        return "/v1/external/enhance", {"function_code": code, "client_id": "c"}, "function_code"
    return "/v1/aitomatic/enhance", {"transpilation_id": "t-1", "function_name": name, "python_code": code}, "python_code"


@pytest.fixture
async def client(real_service):
    async with httpx.AsyncClient(base_url=real_service.url, timeout=60) as client:
        yield client


async def log_head(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/v1/events", params={"page_size": 1000})
    assert response.status_code == 200, response.text
    events = response.json().get("events", [])
    return int(events[-1]["position"]) if events else 0


@pytest.mark.parametrize("rpc", ["Enhance", "EnhanceExternal", "EnhanceTranspiled"])
@pytest.mark.parametrize("case", REFUSED, ids=REFUSED.keys())
async def test_hostile_code_is_a_400_naming_the_field_and_stores_nothing(client, rpc, case) -> None:
    code, says = REFUSED[case]
    path, body, field = call(rpc, code)
    head = await log_head(client)
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text[:500]
    error = response.json()
    assert error["code"] == 3 and len(error["message"].encode()) <= 1024
    details = {d["@type"].rsplit(".", 1)[-1]: d for d in error["details"]}
    (violation,) = details["BadRequest"]["field_violations"]
    assert violation["field"] == field
    assert says in violation["description"] and len(violation["description"].encode()) <= 1024
    assert await log_head(client) == head
    assert (await client.get("/v1/domains")).status_code == 200  # still serving


@pytest.mark.parametrize("rpc", ["Enhance", "EnhanceExternal", "EnhanceTranspiled"])
@pytest.mark.parametrize("case", ACCEPTED, ids=ACCEPTED.keys())
async def test_odd_but_valid_code_enhances_over_rest(client, rpc, case) -> None:
    name = f"odd_{rpc.lower()}_{list(ACCEPTED).index(case)}"
    path, body, _ = call(rpc, ACCEPTED[case].replace("def f(", f"def {name}("), name)
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text[:500]
    python = response.json()["enhanced_code"]["python"]
    assert f"def {name}(" in python and "\r" not in python
