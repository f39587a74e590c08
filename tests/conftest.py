"""Fixtures shared by the integration and end-to-end tests: a real server on
port 0 over a real SQLite file, and clients for it. POET_TEST_DB=postgresql runs
them on PostgreSQL instead: a fresh database of the tests' own server (postgres_support)."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from poet_grpc._gen.poet.v1 import poet_service_pb2_grpc
from poet_grpc.config import Settings
from postgres_support import on_postgres, postgres_server, postgres_url  # noqa: F401 - fixtures


@pytest.fixture
def settings(tmp_path, request) -> Settings:
    # Idle checkpoints are slow by default so that live delivery in tests has to
    # come from append notifications, not from a periodic re-read.
    marker = request.node.get_closest_marker("checkpoint_seconds")
    return Settings(
        grpc_listen="127.0.0.1:0",
        gateway=False,
        db=request.getfixturevalue("postgres_url") if on_postgres() else tmp_path / "poet.db",
        checkpoint_seconds=marker.args[0] if marker else 30.0,
    )


@pytest_asyncio.fixture
async def server(settings):
    from poet_grpc.api.server import create_server

    server, port = await create_server(settings)
    server.address = f"127.0.0.1:{port}"
    yield server
    await server.stop(grace=1)


@pytest_asyncio.fixture
async def channel(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture
def stub(channel) -> poet_service_pb2_grpc.PoetServiceStub:
    return poet_service_pb2_grpc.PoetServiceStub(channel)
