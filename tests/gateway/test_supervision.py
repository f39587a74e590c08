"""`poet-grpc serve` supervises its Envoy: rendered from the listen addresses,
started once gRPC serves, a death noticed (exit 1, nothing left behind), stopped
last on SIGTERM after a drain during which readiness is 503."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and comm == name:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Serve:
    """A `poet-grpc serve` process on free ports."""

    def __init__(self, db: str | Path, **env: str):
        self.grpc_port, self.http_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        # No drain unless a test asks for one (the default would add 5 s to every stop).
        environment = dict(os.environ, POET_DB=str(db), POET_SHUTDOWN_GRACE_SECONDS="1",
                           POET_SHUTDOWN_DRAIN_SECONDS="0")
        environment.update(env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", f"127.0.0.1:{self.grpc_port}",
             "--http-listen", f"127.0.0.1:{self.http_port}"],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if "REST gateway listening" in line:
                (self.envoy,) = _children(self.process.pid, "envoy")
                return
        self.process.kill()
        raise AssertionError("serve did not start:\n" + "".join(self.lines))

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        return code, "".join(self.lines) + self.process.stdout.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve(database):
    started: list[Serve] = []

    def start(**env: str) -> Serve:
        started.append(Serve(database, **env))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def test_envoy_config_is_rendered_from_the_listen_addresses(serve) -> None:
    service = serve()
    command = Path(f"/proc/{service.envoy}/cmdline").read_bytes().split(b"\0")
    config = Path(command[command.index(b"-c") + 1].decode()).read_text()
    assert f"port_value: {service.http_port}" in config
    assert f'{{"socket_address": {{"address": "127.0.0.1", "port_value": {service.grpc_port}}}}}' in config
    assert httpx.get(f"{service.url}/health/live", timeout=10).json() == {"status": "alive"}
    service.process.send_signal(signal.SIGTERM)
    assert service.finish()[0] == 0


def test_a_dying_envoy_stops_the_service_with_exit_1_and_leaves_nothing(serve) -> None:
    service = serve()
    os.kill(service.envoy, signal.SIGKILL)
    code, output = service.finish()
    assert code == 1
    assert "gateway exited unexpectedly" in output and "stopped" in output
    assert _gone(service.envoy)
    assert not _accepts(service.grpc_port)  # the gRPC server stopped too
    assert not _accepts(service.http_port)


def test_sigterm_drains_with_readiness_503_then_stops_envoy_last(serve) -> None:
    service = serve(POET_SHUTDOWN_DRAIN_SECONDS="3")
    with httpx.Client(base_url=service.url, timeout=10) as http:
        assert http.get("/health/ready").status_code == 200
        service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while http.get("/health/ready").status_code == 200:  # the signal takes a moment
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready = http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert http.get("/v1/domains").status_code == 200  # still serving during the drain
    code, output = service.finish()
    assert code == 0, output
    assert "not ready; serving 3s more" in output
    assert _gone(service.envoy)
    assert not _accepts(service.http_port)


def test_ctrl_c_stops_at_once_without_the_drain(serve) -> None:
    service = serve(POET_SHUTDOWN_DRAIN_SECONDS="30")
    started = time.monotonic()
    service.process.send_signal(signal.SIGINT)
    code, output = service.finish(timeout=25)
    assert code == 0, output
    assert "serving 30s more" not in output and "stopped" in output
    assert time.monotonic() - started < 25
