"""A Node.js client generated from the repository's protos alone (proto/ and
third_party/, not the Python packages' copies) decodes the google.rpc error
details of a real server: the same Status the Python client reads."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).with_name("node") / "error_details_client.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

DETAIL_TYPES = {kind.DESCRIPTOR.full_name: kind for kind in (
    error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.ResourceInfo)}


async def node_status(address: str, method: str, request: dict) -> dict:
    """The google.rpc.Status the Node client decoded from its failed call."""
    for package in ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs"):
        assert (ROOT / "node_modules" / package).is_dir(), f"{package} missing: run npm install (or python3 dev.py setup)"
    process = await asyncio.create_subprocess_exec(
        NODE, str(CLIENT), address, method, json.dumps(request),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def python_status(stub, method: str, request) -> dict:
    """The same Status as the Python client reads it, in the Node client's JSON shape."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await getattr(stub, method)(request)
    status = rpc_status.from_call(failure.value)
    details = []
    for any_detail in status.details:
        message = DETAIL_TYPES[any_detail.TypeName()]()
        any_detail.Unpack(message)
        details.append({"@type": any_detail.type_url, **json_format.MessageToDict(message, preserving_proto_field_name=True)})
    return {"code": status.code, "message": status.message, "details": details}


def by_type(status: dict) -> dict[str, dict]:
    return {detail["@type"].rsplit("/", 1)[-1]: detail for detail in status["details"]}


async def test_node_client_decodes_bad_request_and_error_info(server, stub) -> None:
    request = {"function_name": "1x", "original_code": ""}
    status = await node_status(server.address, "Enhance", request)
    assert status["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    details = by_type(status)
    assert set(details) == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}
    assert details["google.rpc.ErrorInfo"]["domain"] == "poet.v1"
    assert details["google.rpc.ErrorInfo"]["reason"]
    fields = {v["field"] for v in details["google.rpc.BadRequest"]["field_violations"]}
    assert {"function_name", "original_code"} <= fields
    assert status == await python_status(stub, "Enhance", pb.EnhanceRequest(**request))


async def test_node_client_decodes_resource_info(server, stub) -> None:
    request = {"function_name": "nowhere", "version": "v1"}
    status = await node_status(server.address, "GetVersion", request)
    assert status["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert by_type(status)["google.rpc.ResourceInfo"]["resource_name"]
    assert status == await python_status(stub, "GetVersion", pb.GetVersionRequest(**request))
