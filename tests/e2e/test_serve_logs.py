"""The real `poet-grpc serve --log-format json --log-level DEBUG`, with an auth file,
tracing to a local OTLP receiver and Gemini at a local fake: every line the process
writes, on stdout and stderr, is a JSON object with the log's fields; each call leaves
one request line with its status and ids; no credential appears; libraries log
neither DEBUG chatter nor bandit's plugin-loading error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

import grpc
import httpx
import pytest

from auth_support import API_KEYS, bearer, write_auth_file
from fakes.gemini_server import GeminiFake, text_reply
from fakes.otlp_receiver import OtlpReceiver
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc
from test_serve import CODE, free_port
from support import read_until

FIELDS = {"time", "level", "logger", "message", "request_id", "correlation_id", "trace_id", "span_id"}
GEMINI_KEY = "gm-" + uuid.uuid4().hex
WRONG_KEY = "pk_agent_" + "w" * 24


@dataclass
class Run:
    lines: list[str]
    records: list[dict]
    secrets: list[str]
    grpc_trace: str
    rest_trace: str

    def requests(self, **fields) -> list[dict]:
        """The request lines with these field values."""
        return [r for r in self.records if r["logger"] == "poet_grpc.api.requests"
                and all(r.get(k) == v for k, v in fields.items())]


def traceparent() -> tuple[str, str]:
    trace_id = uuid.uuid4().hex
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01", trace_id


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("logs")
    credentials = write_auth_file(tmp / "auth")
    token = credentials.token(sub="transpiler-1", roles=("viewer",))
    grpc_address, http_port = f"127.0.0.1:{free_port()}", free_port()
    with OtlpReceiver() as receiver, GeminiFake() as gemini:
        gemini.push(text_reply("No code today."), text_reply("Nor now."))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "POET_"))}
        env.update(POET_DB=str(tmp / "poet.db"), POET_SHUTDOWN_GRACE_SECONDS="2", POET_SHUTDOWN_DRAIN_SECONDS="0",
                   POET_GEMINI_API_KEY=GEMINI_KEY, POET_GEMINI_BASE_URL=gemini.base_url,
                   OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        process = subprocess.Popen(
            [sys.executable, "-m", "poet_grpc", "serve", "--log-format", "json", "--log-level", "DEBUG",
             "--grpc-listen", grpc_address, "--http-listen", f"127.0.0.1:{http_port}",
             "--auth-file", str(credentials.auth_file)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            lines = read_until(process, "REST gateway listening")
            grpc_header, grpc_trace = traceparent()
            rest_header, rest_trace = traceparent()
            with grpc.insecure_channel(grpc_address) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                stub.Enhance(pb.EnhanceRequest(function_name="moving_average", original_code=CODE,
                                               request_id="req-enhance-1"),
                             metadata=bearer(API_KEYS["agent"]) + (("traceparent", grpc_header),), timeout=60)
                stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(token), timeout=30)
                with pytest.raises(grpc.RpcError) as refused:
                    stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(WRONG_KEY), timeout=30)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as client:
                answer = client.post("/api/v1/functions/enhance", json={"function_name": "moving_average",
                                                                        "original_code": CODE, "domain": "computation"},
                                     headers={"authorization": f"Bearer {API_KEYS['agent']}", "traceparent": rest_header,
                                              "x-correlation-id": "corr-rest-1"})
                assert answer.status_code == 200, answer.text
                assert client.get("/v1/domains", headers={"authorization": f"Bearer {token}"}).status_code == 200
        finally:
            process.terminate()
            rest, _ = process.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    return Run(lines, records, [*API_KEYS.values(), token, WRONG_KEY, GEMINI_KEY], grpc_trace, rest_trace)


def test_every_line_is_a_json_object_with_the_log_s_fields(run):
    assert run.records
    for record in run.records:
        assert isinstance(record, dict) and FIELDS <= record.keys(), record
    assert "Z" == run.records[0]["time"][-1]


def test_the_startup_lines_and_envoy_s_output_are_log_records(run):
    console = [r["message"] for r in run.records if r["logger"] == "poet_grpc.console"]
    assert any(m.startswith("gRPC listening on") for m in console), console
    assert any(m.startswith("REST gateway listening on") for m in console), console
    assert console[-1] == "stopped"
    envoy = [r for r in run.records if r["logger"] == "poet_grpc.api.gateway" and r["message"].startswith("envoy: ")]
    assert envoy, "Envoy's output was not re-logged"
    # Nothing wrote past logging (those lines would come back from the captured fds).
    assert [r["message"] for r in run.records if r["logger"] == "poet_grpc.output"] == []


def test_each_call_leaves_one_request_line_with_its_status_and_ids(run):
    [enhance] = run.requests(rpc="/poet.v1.PoetService/Enhance", request_id="req-enhance-1")
    assert enhance["level"] == "INFO" and enhance["code"] == "OK" and enhance["latency_ms"] > 0
    assert enhance["principal"] == "agent-key" and enhance["trace_id"] == run.grpc_trace
    [rest] = run.requests(rpc="/poet.v1.PoetService/Enhance", http_path="/api/v1/functions/enhance")
    assert rest["code"] == "OK" and rest["principal"] == "agent-key" and rest["http_method"] == "POST"
    assert rest["trace_id"] == run.rest_trace and rest["correlation_id"] == "corr-rest-1"
    assert rest["request_id"]  # Envoy's x-request-id when the call has no request_id of its own
    assert len(run.requests(rpc="/poet.v1.PoetService/ListDomains", code="OK", principal="transpiler-1")) == 2
    [refused] = run.requests(rpc="/poet.v1.PoetService/ListDomains", code="UNAUTHENTICATED")
    assert refused["principal"] is None
    assert len(run.requests()) == 5


def test_lines_logged_while_serving_a_call_carry_its_trace(run):
    during = [r for r in run.records if r["trace_id"] == run.grpc_trace and r["logger"] != "poet_grpc.api.requests"]
    assert any(r["logger"] == "poet_grpc.generator._llm" for r in during), during  # "Gemini version ... not used"


def test_no_credential_appears(run):
    output = "".join(run.lines)
    for secret in run.secrets:
        assert secret not in output


def test_libraries_neither_chatter_nor_report_bandit_s_plugins_as_errors(run):
    assert not [r for r in run.records if r["level"] in ("ERROR", "CRITICAL")]
    assert "sarif" not in "".join(run.lines).lower()
    # The Gemini client's requests, grpc's event engine...: below WARNING, only POET's own lines.
    chatter = [r for r in run.records if r["level"] in ("DEBUG", "INFO") and not r["logger"].startswith("poet_grpc")]
    assert chatter == []
    assert any(r["level"] == "DEBUG" and r["logger"].startswith("poet_grpc") for r in run.records)
