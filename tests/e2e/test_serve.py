"""The real `poet-grpc serve` process: gRPC + Envoy REST gateway + SQLite,
driven over REST with the seed's JSON, through the shell client, and stopped
with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

import seccomp
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


def test_startup_prints_where_it_listens_and_which_isolation_is_in_force(service):
    text = "".join(service.output)
    assert f"gRPC listening on {service.grpc_address}" in text
    assert f"REST gateway listening on {service.http}" in text
    assert "code sandbox: namespaces (user, pid, network, mount" in text
    assert "WARNING" not in text


@pytest.mark.skipif(not seccomp.supported(), reason="no seccomp filter for this machine")
def test_serve_refuses_to_start_when_the_host_gives_no_sandbox(tmp_path):
    """No silent fallback: on a host whose seccomp profile refuses unshare(2) (as a
    container runtime's default does), serve stops at startup, says why and names
    the weaker mode, which an operator may then choose knowingly."""
    command = [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", f"127.0.0.1:{free_port()}", "--no-gateway"]
    env = dict(os.environ, POET_DB=str(tmp_path / "refused.db"), POET_SHUTDOWN_DRAIN_SECONDS="0")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, preexec_fn=seccomp.deny_unshare)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "poet-grpc: cannot start:" in result.stderr and "--sandbox process" in result.stderr
    assert "Operation not permitted" in result.stderr
    assert "gRPC listening" not in result.stdout and "Traceback" not in result.stderr

    weaker = subprocess.Popen(command + ["--sandbox", "process"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=seccomp.deny_unshare)
    try:
        lines = [weaker.stdout.readline() for _ in range(2)]
        assert "gRPC listening" in lines[0] and "code sandbox: process (WEAKER" in lines[1], lines
        address = command[command.index("--grpc-listen") + 1]
        with grpc.insecure_channel(address) as channel:
            from poet_grpc._gen.poet.v1 import probes_pb2, probes_pb2_grpc

            ready = probes_pb2_grpc.ProbeServiceStub(channel).GetReadiness(probes_pb2.GetReadinessRequest(), timeout=10)
            assert ready.isolation == "process" and ready.checks.sandbox
            stub = poet_service_pb2_grpc.PoetServiceStub(channel)
            assert stub.Enhance(pb.EnhanceRequest(function_name="moving_average", original_code=CODE), timeout=30).version
    finally:
        weaker.send_signal(signal.SIGTERM)
        _, errors = weaker.communicate(timeout=30)
    assert "WARNING: submitted code is not confined" in errors
