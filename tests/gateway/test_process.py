"""The Envoy process: start, stop, death, errors; config rendering; descriptor set."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

import poet_grpc
from poet_grpc.api.gateway import (
    EnvoyGateway,
    GatewayError,
    build_descriptor_set,
    render_config,
    template_path,
)

# No upstream needed: Envoy starts and answers without it.
NO_UPSTREAM = "127.0.0.1:1"
SIDE = "/run/poet-side/http.sock"  # the HTTP side's socket, for rendering only


def _process_gone(pid: int) -> bool:
    """True when pid is gone or a zombie (reparented, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def _until_gone(pid: int, timeout: float = 5) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if _process_gone(pid):
            return True
        await asyncio.sleep(0.05)
    return _process_gone(pid)


async def test_stop_leaves_no_envoy_and_is_idempotent() -> None:
    gateway = EnvoyGateway(NO_UPSTREAM, "127.0.0.1:0")
    await gateway.start()
    pid, work_dir = gateway.pid, gateway.work_dir
    assert pid is not None and work_dir is not None and work_dir.is_dir()
    assert gateway.http_port > 0
    assert gateway.admin_url.startswith("http://127.0.0.1:")
    assert gateway.returncode is None
    await gateway.stop()
    await gateway.stop()
    assert gateway.returncode is not None
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not work_dir.exists()


async def test_given_work_dir_is_kept(tmp_path: Path) -> None:
    async with EnvoyGateway(NO_UPSTREAM, "127.0.0.1:0", work_dir=tmp_path / "envoy"):
        pass
    assert (tmp_path / "envoy" / "envoy.yaml").is_file()
    assert (tmp_path / "envoy" / "poet.pb").is_file()


async def test_wait_returns_when_envoy_dies() -> None:
    gateway = EnvoyGateway(NO_UPSTREAM, "127.0.0.1:0")
    await gateway.start()
    try:
        os.kill(gateway.pid, signal.SIGKILL)
        assert await asyncio.wait_for(gateway.wait(), 5) == -signal.SIGKILL
        assert gateway.returncode == -signal.SIGKILL
    finally:
        await gateway.stop()


async def test_port_in_use_is_a_gateway_error_that_says_why() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = EnvoyGateway(NO_UPSTREAM, f"127.0.0.1:{port}")
        with pytest.raises(GatewayError, match="Address already in use"):
            await gateway.start()
    assert gateway.returncode is not None
    assert gateway.work_dir is None  # owned work dir removed


async def test_envoy_dies_with_a_killed_parent() -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from poet_grpc.api.gateway import EnvoyGateway

        async def main():
            gateway = EnvoyGateway({NO_UPSTREAM!r}, "127.0.0.1:0")
            await gateway.start()
            print(gateway.pid, flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 15)
        envoy_pid = int(line)
        assert not _process_gone(envoy_pid)
    finally:
        parent.kill()
        await parent.wait()
    assert await _until_gone(envoy_pid), f"Envoy {envoy_pid} outlived its kill -9'd parent"


@pytest.mark.parametrize(
    "address",
    ["", "8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536",
     "::1:8080", "[not-v6]:8080", "host name:80", "a:b:c"],
)
def test_render_config_rejects_bad_addresses(address: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="address"):
        render_config(grpc_address=address, http_address="127.0.0.1:0", descriptor_path=tmp_path, side_socket=SIDE)
    with pytest.raises(ValueError, match="address"):
        render_config(grpc_address="127.0.0.1:50051", http_address=address, descriptor_path=tmp_path, side_socket=SIDE)


def test_render_config_rejects_hostname_listener_and_port_0_upstream(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="IP addresses only"):
        render_config(grpc_address="127.0.0.1:50051", http_address="example.com:8080",
                      descriptor_path=tmp_path, side_socket=SIDE)
    with pytest.raises(ValueError, match="port 0"):
        render_config(grpc_address="127.0.0.1:0", http_address="127.0.0.1:8080",
                      descriptor_path=tmp_path, side_socket=SIDE)


def test_render_config_fills_every_placeholder(tmp_path: Path) -> None:
    config = render_config(
        grpc_address="poet-server:50051",
        http_address="[::]:8080",
        descriptor_path=tmp_path / "with space" / "poet.pb",
        side_socket=SIDE,
    )
    assert "${" not in config
    assert '{address: "::", port_value: 8080}' in config
    assert '{"socket_address": {"address": "poet-server", "port_value": 50051}}' in config
    assert "type: STRICT_DNS" in config and "transport_socket: null" in config
    assert f'proto_descriptor: "{tmp_path}/with space/poet.pb"' in config
    assert '{"pipe": {"path": "/run/poet-side/http.sock"}}' in config  # the HTTP side
    assert "stream_sse_style_delimited" not in config  # SSE comes from the HTTP side
    assert config.count("reject_unknown_query_parameters: true") == 1


def test_render_config_for_a_unix_socket_upstream_and_tls(tmp_path: Path) -> None:
    config = render_config(grpc_address="unix:/run/poet/grpc.sock", http_address="127.0.0.1:0",
                           descriptor_path=tmp_path / "poet.pb", side_socket=SIDE,
                           tls=("cert.pem", "key.pem", "ca.pem"))
    assert '{"pipe": {"path": "/run/poet/grpc.sock"}}' in config and "type: STATIC" in config
    assert "DownstreamTlsContext" in config and '"require_client_certificate": true' in config
    assert f'"filename": "{(Path.cwd() / "ca.pem")}"' in config  # relative paths resolved


def test_template_path_is_the_checkout_template() -> None:
    expected = Path(poet_grpc.__file__).resolve().parent.parent / "gateway" / "envoy.yaml.tmpl"
    assert template_path() == expected
    assert template_path().is_file()


def test_descriptor_set_holds_contract_and_rich_error_types_deps_first() -> None:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(build_descriptor_set())
    names = [f.name for f in descriptor_set.file]
    assert len(names) == len(set(names))
    for name in (
        "poet/v1/poet_service.proto",
        "poet/v1/resources.proto",
        "poet/v1/events.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/api/field_behavior.proto",
        "google/protobuf/descriptor.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ):
        assert name in names
    for index, file in enumerate(descriptor_set.file):
        for dependency in file.dependency:
            assert names.index(dependency) < index, f"{file.name} before its import {dependency}"
    service = next(f for f in descriptor_set.file if f.name == "poet/v1/poet_service.proto")
    # The google.api.http options survive (the transcoder's routes come from them).
    assert "/v1/domains" in str(service.service[0].method)


async def test_not_ready_in_time_is_a_gateway_error_and_leaves_nothing() -> None:
    gateway = EnvoyGateway(NO_UPSTREAM, "127.0.0.1:0")
    with pytest.raises(GatewayError, match="not ready within"):
        await gateway.start(timeout=0.001)
    assert gateway.pid is not None
    assert await _until_gone(gateway.pid)
    assert gateway.work_dir is None


def test_render_config_serves_the_openapi_document_and_times_out_unary_calls_only(tmp_path: Path) -> None:
    from poet_grpc.api.gateway import openapi_path

    config = render_config(grpc_address="127.0.0.1:50051", http_address="127.0.0.1:8080",
                           descriptor_path=tmp_path / "poet.pb", side_socket=SIDE, request_timeout=2.5)
    assert f'body: {{filename: "{openapi_path()}"}}' in config
    assert config.count("timeout: 2.5s") == 1  # the unary catch-all route
    assert config.count("match_incoming_request_route: true") == 1  # else routes see gRPC paths
    custom = render_config(grpc_address="127.0.0.1:50051", http_address="127.0.0.1:8080",
                           descriptor_path=tmp_path / "poet.pb", side_socket=SIDE, openapi=tmp_path / "doc.json")
    assert f'body: {{filename: "{tmp_path}/doc.json"}}' in custom
    with pytest.raises(ValueError, match="request_timeout"):
        render_config(grpc_address="127.0.0.1:50051", http_address="127.0.0.1:8080",
                      descriptor_path=tmp_path / "poet.pb", side_socket=SIDE, request_timeout=0)


async def test_missing_openapi_document_is_a_gateway_error(monkeypatch, tmp_path: Path) -> None:
    import poet_grpc.api.gateway as gateway_module

    monkeypatch.setattr(gateway_module, "openapi_path", lambda: tmp_path / "missing.json")
    gateway = EnvoyGateway(NO_UPSTREAM, "127.0.0.1:0")
    with pytest.raises(GatewayError, match="scripts/generate.py"):
        await gateway.start()
    assert gateway.pid is None and gateway.work_dir is None
