"""A real grpc.aio server with a small test servicer, and a real Envoy in front of it;
and the real service (gateway_support) with its database: a SQLite file, or with
POET_TEST_DB=postgresql a fresh database of the tests' PostgreSQL server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import grpc
import httpx
import pytest
import pytest_asyncio
from google.protobuf import any_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from poet_grpc._gen.poet.v1 import (
    events_pb2,
    poet_service_pb2,
    poet_service_pb2_grpc,
    resources_pb2,
)
from poet_grpc.api.gateway import EnvoyGateway

from gateway_support import RealService, start_real_service, stop_real_service
from postgres_support import on_postgres


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class FakePoetService(poet_service_pb2_grpc.PoetServiceServicer):
    """Upstream test double: just enough behaviour to exercise the transcoder."""

    async def ListDomains(self, request, context):
        return poet_service_pb2.ListDomainsResponse(
            domains=[
                resources_pb2.Domain(
                    name="base_reliability",
                    description="Retries and timeouts.",
                    parameters=[
                        resources_pb2.DomainParameter(
                            name="max_retries",
                            description="Attempts after the first.",
                            default_value=struct_pb2.Value(number_value=3),
                        )
                    ],
                ),
                resources_pb2.Domain(name="ml_monitoring", description="Drift checks."),
            ]
        )

    async def GetVersion(self, request, context):
        if (request.function_name, request.version) == ("f", "v1"):
            return poet_service_pb2.GetVersionResponse(
                version=resources_pb2.FunctionVersion(
                    function_name="f",
                    version="v1",
                    status=resources_pb2.active,
                    metrics=resources_pb2.VersionMetrics(feedback_count=7),
                    current=True,
                )
            )
        info = error_details_pb2.ErrorInfo(
            reason="VERSION_NOT_FOUND",
            domain="poet.v1",
            metadata={"function_name": request.function_name, "version": request.version},
        )
        await context.abort_with_status(
            rpc_status.to_status(
                status_pb2.Status(
                    code=code_pb2.NOT_FOUND,
                    message=f"version {request.version!r} of {request.function_name!r} not found",
                    details=[_any(info)],
                )
            )
        )

    async def Enhance(self, request, context):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field="original_code", description="must define function " + repr(request.function_name)
        )
        await context.abort_with_status(
            rpc_status.to_status(
                status_pb2.Status(
                    code=code_pb2.INVALID_ARGUMENT,
                    message="invalid EnhanceRequest",
                    details=[_any(error_details_pb2.BadRequest(field_violations=[violation]))],
                )
            )
        )

    async def StreamEvents(self, request, context):
        for position in (1, 2, 3):
            yield poet_service_pb2.StreamEventsResponse(
                event=events_pb2.Event(
                    id=f"e{position}",
                    type="function.feedback",
                    position=position,
                    function_name=request.function_name,
                )
            )
        await asyncio.Event().wait()  # stay open, as a live tail does


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def grpc_address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    poet_service_pb2_grpc.add_PoetServiceServicer_to_server(FakePoetService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(grpc_address: str) -> AsyncIterator[EnvoyGateway]:
    gateway = EnvoyGateway(grpc_address, "127.0.0.1:0")
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
def base_url(gateway: EnvoyGateway) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


# -- the real service: create_server() (store, core, interceptors) behind a real Envoy --

@pytest.fixture
def database(tmp_path, request) -> str | Path:
    """The database of a test's own real service or `poet-grpc serve`: tmp_path/poet.db,
    or with POET_TEST_DB=postgresql a fresh PostgreSQL database (`postgres_url`)."""
    return request.getfixturevalue("postgres_url") if on_postgres() else tmp_path / "poet.db"


@pytest.fixture(scope="module")
def new_database(tmp_path_factory, request) -> Iterator[Callable[[], str | Path]]:
    """For a module's shared real service: new_database() is a database of its own, a
    SQLite file, or with POET_TEST_DB=postgresql a fresh PostgreSQL database that is
    dropped once the module's tests are done (`postgres_url` is one test's only)."""
    server = request.getfixturevalue("postgres_server") if on_postgres() else None
    created: list[str] = []

    def new() -> str | Path:
        if server is None:
            return tmp_path_factory.mktemp("db") / "poet.db"
        created.append(server.create_database())
        return server.url(created[-1])

    try:
        yield new
    finally:
        for name in created:
            server.drop_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def real_service(new_database) -> AsyncIterator[RealService]:
    """Shared by a module's tests: idle streams get a checkpoint every 0.3 s."""
    service = await start_real_service(new_database(), checkpoint_seconds=0.3)
    yield service
    await stop_real_service(service)


@pytest_asyncio.fixture(loop_scope="module")
async def client(real_service) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the module's real service."""
    async with httpx.AsyncClient(base_url=real_service.url, timeout=30) as client:
        yield client
