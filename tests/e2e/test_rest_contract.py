"""Property-based contract run: schemathesis generates requests from the committed
gateway/openapi.json (generated from the proto) and sends them to a real
`poet-grpc serve` (gRPC server + Envoy + SQLite). Every answer must be a non-5xx
that matches the document: status code, content type, headers and JSON schema.

Bounded and reproducible: a fixed number of examples per operation, derandomized
(fixed seed), no example database. The two Server-Sent Events operations are left
out (their responses never end); tests/gateway/test_rest_service.py covers them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode, checks
from schemathesis.core.parameters import ParameterLocation
from hypothesis import HealthCheck, settings, strategies as st

OPENAPI = Path(__file__).resolve().parents[2] / "gateway" / "openapi.json"
MAX_EXAMPLES = 12
"""Per operation and generation mode; 14 operations, ~2 s each on 2 cores."""

schema = schemathesis.openapi.from_path(OPENAPI).exclude(path_regex=r":stream$")
schema.config.generation.update(modes=["positive", "negative"], max_examples=MAX_EXAMPLES, deterministic=True)

KNOWN = {"function_name": "double", "version": "v1"}
"""Stored before the run (see gateway_url): random names would almost always miss
it, and then only the 404 answers of the read paths would be checked."""


@schema.hook
def flatmap_case(context, case):
    """Half of the valid cases (positive path parameters) address the stored function."""
    component = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
    if not case.path_parameters or component is None or component.mode != GenerationMode.POSITIVE:
        return st.just(case)
    known = {name: KNOWN[name] for name in case.path_parameters if name in KNOWN}
    return st.booleans().map(lambda use: _with_path(case, known) if use else case)


def _with_path(case, known):
    case.path_parameters = {**case.path_parameters, **known}
    return case


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]
"""Not positive_data_acceptance: the document states types, not the service's
value rules (identifiers, ranges, sizes; poet_grpc/api/interceptors/validation.py),
so schema-valid requests may rightly get a 400."""

CODE = "def double(x: int) -> int:\n    return 2 * x\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory):
    """A real `poet-grpc serve`, with one function stored so that reads find something."""
    grpc_address, http_port = f"127.0.0.1:{_free_port()}", _free_port()
    env = dict(os.environ, POET_DB=str(tmp_path_factory.mktemp("contract") / "poet.db"),
               POET_SHUTDOWN_GRACE_SECONDS="2", POET_SHUTDOWN_DRAIN_SECONDS="0", POET_LOG_LEVEL="ERROR")
    process = subprocess.Popen(
        [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", grpc_address,
         "--http-listen", f"127.0.0.1:{http_port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if not line or "REST gateway listening" in line:
            break
    if process.poll() is not None or "REST gateway listening" not in output[-1]:
        process.kill()
        pytest.fail("poet-grpc serve did not start:\n" + "".join(output))
    url = f"http://127.0.0.1:{http_port}"
    import httpx

    seeded = httpx.post(f"{url}/api/v1/functions/enhance", json={"function_name": "double", "original_code": CODE},
                        timeout=30)
    assert seeded.status_code == 200, seeded.text
    yield url
    process.terminate()
    try:
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,  # time per call is bounded by the request timeout below
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_gateway_answers_as_documented(case, gateway_url):
    case.call_and_validate(base_url=gateway_url, timeout=15, checks=CHECKS)
