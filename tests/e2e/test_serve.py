"""The real `poet-grpc serve` process: gRPC + Envoy REST gateway + SQLite,
driven over REST with the seed's JSON, through the shell client, and stopped
with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc

CODE = '''
def moving_average(values: list, window: int = 3) -> list:
    """Averages of each run of `window` consecutive values."""
    return [sum(values[i:i + window]) / window for i in range(len(values) - window + 1)]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_named(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == pid and comm == name:
                found.append(int(entry.name))
    return found


class Service:
    def __init__(self, tmp: Path):
        self.grpc_address = f"127.0.0.1:{free_port()}"
        self.http = f"http://127.0.0.1:{free_port()}"
        self.db = tmp / "service.db"
        env = dict(os.environ, POET_DB=str(self.db), POET_SHUTDOWN_GRACE_SECONDS="5")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", self.grpc_address,
             "--http-listen", self.http.removeprefix("http://")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("serve exited early:\n" + "".join(self.output))
            self.output.append(line)
            if "REST gateway listening" in line:
                return
        raise AssertionError("serve did not start:\n" + "".join(self.output))

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "poet_grpc", *args, "--server", self.grpc_address],
            input=stdin, capture_output=True, text=True, timeout=60,
        )


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    service = Service(tmp_path_factory.mktemp("serve"))
    yield service
    if service.process.poll() is None:
        service.process.kill()
        service.process.wait()


def test_startup_prints_where_it_listens(service):
    text = "".join(service.output)
    assert f"gRPC listening on {service.grpc_address}" in text
    assert f"REST gateway listening on {service.http}" in text


def test_rest_enhance_feedback_versions_events_with_the_seed_json(service):
    with httpx.Client(base_url=service.http, timeout=30) as http:
        enhanced = http.post(
            "/api/v1/functions/enhance",
            json={
                "function_name": "moving_average",
                "original_code": CODE,
                "domain": "data_processing",
                "optimize_for": "reliability",
                "context": {"imports": [], "dependencies": [], "environment": "test"},
            },
        )
        assert enhanced.status_code == 200, enhanced.text
        body = enhanced.json()
        assert body["version"] == "v1"
        assert "def moving_average(values: list, window: int = 3) -> list" in body["enhanced_code"]["python"]
        assert body["metadata"]["domain"] == "data_processing"
        assert isinstance(body["metadata"]["optimizations"], list)

        feedback = http.post(
            "/api/v1/functions/moving_average/feedback",
            json={
                "version": "v1",
                "execution_id": "run-1",
                "feedback_type": "performance",
                "rating": 4,
                "metrics": {"success_rate": 0.98, "avg_duration": 3.2, "error_rate": 0.02},
                "suggestions": ["vectorise"],
            },
        )
        assert feedback.status_code == 200, feedback.text
        assert feedback.json()["status"] == "accepted"

        versions = http.get("/api/v1/functions/moving_average/versions").json()
        assert versions["current_version"] == "v1"
        (v1,) = versions["versions"]
        assert v1["status"] == "active"
        assert v1["metrics"]["success_rate"] == pytest.approx(0.98)
        assert "created_at" in v1

        events = http.get(
            "/api/v1/functions/moving_average/events", params={"event_type": "function.feedback", "limit": 10}
        ).json()
        assert [e["type"] for e in events["events"]] == ["function.feedback"]
        assert events["events"][0]["payload"]["execution_id"] == "run-1"
        assert events["next_page_token"] == ""

        domains = http.get("/v1/domains").json()["domains"]
        assert "ml_monitoring" in {d["name"] for d in domains}


def test_rest_aitomatic_and_external_paths(service):
    with httpx.Client(base_url=service.http, timeout=30) as http:
        transpiled = http.post(
            "/v1/aitomatic/enhance",
            json={
                "transpilation_id": "tr-1",
                "agent_id": "agent",
                "dana_source": "def scale(x: float) -> float:\n    return x * 2\n",
                "python_code": "def scale(x: float) -> float:\n    return x * 2\n",
                "function_name": "scale",
                "domain": "computation",
                "config": {"max_retries": 1},
            },
        )
        assert transpiled.status_code == 200, transpiled.text
        assert transpiled.json()["success"] is True
        assert "@poet(" in transpiled.json()["enhanced_code"]["dana"]
        external = http.post(
            "/v1/external/enhance", json={"function_code": "def inc(n: int) -> int:\n    return n + 1\n", "client_id": "c"}
        )
        assert external.status_code == 200, external.text
        assert external.json()["function_name"] == "inc"


def test_rest_version_management_and_learning(service):
    code = "def lookup(key: str) -> int:\n    return len(key)\n"
    with httpx.Client(base_url=service.http, timeout=30) as http:
        assert http.post("/api/v1/functions/enhance", json={"function_name": "lookup", "original_code": code}).status_code == 200
        answers = [
            http.post("/api/v1/functions/lookup/feedback", json={"version": "v1", "feedback_type": "user", "rating": 1}).json()
            for _ in range(3)
        ]
        assert [a["status"] for a in answers] == ["accepted", "accepted", "requires_update"]
        assert answers[2]["new_version"] == "v2"
        v2 = http.get("/api/v1/functions/lookup/versions/v2").json()["version"]
        assert v2["update_reason"].startswith("average rating")
        assert {"type": "metadata", "description": "optimize_for: reliability -> safety"} in v2["changes"]
        rolled = http.post("/api/v1/functions/lookup/versions/v1:activate", json={"reason": "keep v1"})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["previous_version"] == "v2"
        refused = http.post("/api/v1/functions/lookup/versions/v1:deprecate", json={})
        assert refused.status_code == 400  # FAILED_PRECONDITION
        assert refused.json()["details"][0]["reason"] == "VERSION_IS_CURRENT"
        done = http.post("/api/v1/functions/lookup/versions/v2:deprecate", json={})
        assert done.json()["version"]["status"] == "deprecated"


def test_enhanced_function_reports_executions_and_failing_field_use_regenerates_it(service, tmp_path):
    """Train, end to end: the enhanced module runs in its own process, sends
    function.execution events through the REST gateway, and the learning loop
    replaces the version when the measured error rate crosses the policy."""
    code = "def parse_port(text: str) -> int:\n    port = int(text)\n    if not 0 < port < 65536:\n        raise ValueError(text)\n    return port\n"
    with httpx.Client(base_url=service.http, timeout=30) as http:
        body = http.post("/api/v1/functions/enhance", json={"function_name": "parse_port", "original_code": code}).json()
        module = tmp_path / "parse_port_enhanced.py"
        module.write_text(body["enhanced_code"]["python"])
        script = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "from parse_port_enhanced import parse_port\n"
            "for text in ['80', '443', '8080', '99999', 'http'] * 5:\n"
            "    try: parse_port(text)\n"
            "    except ValueError: pass\n"
            "parse_port.poet_flush_events(10)\n"
        )
        run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=dict(os.environ, POET_EVENTS_URL=service.http),
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            versions = http.get("/api/v1/functions/parse_port/versions").json()
            if versions["current_version"] == "v2":
                break
            time.sleep(0.1)
        v1 = versions["versions"][0]
        assert v1["metrics"]["execution_count"] == "25"  # int64: a JSON string
        assert v1["metrics"]["error_rate"] == pytest.approx(0.4)
        assert versions["current_version"] == "v2", versions
        assert v1["status"] == "deprecated"
        v2 = http.get("/api/v1/functions/parse_port/versions/v2").json()["version"]
        assert "error rate 40% over 25 executions" in v2["update_reason"]
        assert v2["optimize_for"] == "safety"  # bad inputs, not flaky dependencies


def test_rest_errors_carry_status_and_details(service):
    with httpx.Client(base_url=service.http, timeout=30) as http:
        missing = http.get("/api/v1/functions/nobody/versions")
        assert missing.status_code == 404
        assert missing.json()["code"] == 5
        invalid = http.post("/api/v1/functions/enhance", json={"original_code": CODE})
        assert invalid.status_code == 400
        details = invalid.json()["details"]
        violations = [v for d in details for v in d.get("field_violations", [])]
        assert [v["field"] for v in violations] == ["function_name"]
        assert "Traceback" not in invalid.text


def test_cli_client_commands(service, tmp_path):
    source = tmp_path / "avg.py"
    source.write_text(CODE)
    out = tmp_path / "enhanced.py"
    enhanced = service.cli("enhance", str(source), "--function", "moving_average", "--optimize-for", "performance", "-o", str(out))
    assert enhanced.returncode == 0, enhanced.stderr
    assert json.loads(enhanced.stdout)["version"] == "v2"
    assert "def moving_average" in out.read_text()

    versions = service.cli("versions", "moving_average")
    assert versions.returncode == 0
    assert json.loads(versions.stdout)["current_version"] == "v2"

    feedback = service.cli("feedback", "moving_average", "--version", "v2", "--type", "user", "--rating", "5")
    assert feedback.returncode == 0, feedback.stderr
    assert json.loads(feedback.stdout)["status"] == "accepted"

    events = service.cli("events", "--function", "moving_average", "--type", "function.feedback")
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert [e["payload"]["version"] for e in lines] == ["v1", "v2"]

    published = service.cli("publish", "-", stdin=json.dumps({"type": "drift.detected", "payload": {"function_name": "x"}}))
    assert published.returncode == 0, published.stderr
    assert int(json.loads(published.stdout)["results"][0]["position"]) > 0  # int64 is a JSON string

    assert service.cli("health").stdout.strip() == "SERVING"


def test_cli_follow_streams_backlog_then_live_events(service):
    published = service.cli("publish", "-", stdin=json.dumps(
        [{"type": "follow.backlog", "function_name": "follow_me", "payload": {"n": n}} for n in range(3)]))
    assert published.returncode == 0, published.stderr
    follow = subprocess.Popen(
        [sys.executable, "-m", "poet_grpc", "events", "--follow", "--function", "follow_me", "--server", service.grpc_address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        backlog = [json.loads(follow.stdout.readline()) for _ in range(3)]
        assert [e["payload"]["n"] for e in backlog] == [0, 1, 2]
        service.cli("publish", "-", stdin=json.dumps({"type": "follow.live", "function_name": "follow_me"}))
        assert json.loads(follow.stdout.readline())["type"] == "follow.live"
    finally:
        follow.terminate()
        follow.wait(timeout=10)


def test_cli_reports_refusals_and_unreachable_servers(service, tmp_path):
    refused = service.cli("version", "moving_average", "v99")
    assert refused.returncode == 1
    assert "NOT_FOUND" in refused.stderr and "VERSION_NOT_FOUND" in refused.stderr
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    invalid = service.cli("enhance", str(bad), "--function", "f")
    assert invalid.returncode == 1
    assert "original_code:" in invalid.stderr and "line 1" in invalid.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "poet_grpc", "domains", "--server", f"127.0.0.1:{free_port()}", "--timeout", "2"],
        capture_output=True, text=True, timeout=30,
    )
    assert unreachable.returncode == 3
    assert "cannot reach" in unreachable.stderr


def test_sigterm_drains_closes_streams_stops_envoy_and_exits_zero(service):
    envoys = children_named(service.process.pid, "envoy")
    assert len(envoys) == 1
    channel = grpc.insecure_channel(service.grpc_address)
    stream = poet_service_pb2_grpc.PoetServiceStub(channel).StreamEvents(pb.StreamEventsRequest())
    next(stream)  # the stream is open and has sent its first item
    service.process.send_signal(signal.SIGTERM)
    remaining = list(stream)  # ends (rather than hanging) once the server closes streams
    assert all(item.HasField("event") or item.HasField("checkpoint") for item in remaining)
    assert service.process.wait(timeout=30) == 0
    rest = service.process.stdout.read()
    assert "stopped" in rest
    assert not Path(f"/proc/{envoys[0]}").exists() or "zombie" in Path(f"/proc/{envoys[0]}/status").read_text().lower()
    channel.close()
