"""Helpers for tests: reading google.rpc details off failed calls."""

from __future__ import annotations

import subprocess
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def details(error: grpc.aio.AioRpcError) -> dict[str, object]:
    """The google.rpc details of a failed call, by type name."""
    status = rpc_status.from_call(error)
    assert status is not None, "error carries no google.rpc.Status"
    found = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def violated_fields(error) -> set[str]:
    return {v.field for v in details(error)["BadRequest"].field_violations}


def read_until(process: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    """Lines of a `poet-grpc serve` process's output up to the first that holds `marker`;
    AssertionError (with the output so far) when it exits or takes longer than `timeout`."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError("serve exited early:\n" + "".join(lines))
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError("serve did not start:\n" + "".join(lines))
