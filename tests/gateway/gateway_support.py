"""The real service for gateway tests: create_server() (store, core, interceptors)
behind a real Envoy and its HTTP side; and a Server-Sent Events reader.
(A module of its own: two conftest.py files share one name.)

Its database comes from the fixtures of tests/gateway/conftest.py (`database` for
one test, `new_database` for a module's shared service): a SQLite file, or with
POET_TEST_DB=postgresql a fresh database of the tests' PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Callable

import httpx

from poet_grpc.api.gateway import EnvoyGateway
from postgres_support import on_postgres


class RealService:
    """A real POET gRPC server on port 0 and an Envoy gateway in front of it."""

    def __init__(self, server, gateway: EnvoyGateway, settings):
        self.server = server
        self.gateway = gateway
        self.settings = settings
        self.grpc_address = f"127.0.0.1:{server.port}"
        self.url = f"http://127.0.0.1:{gateway.http_port}"


async def start_real_service(db, **overrides) -> RealService:
    """As `poet-grpc serve` runs it, on db (a SQLite file or a postgresql:// URL, from
    the `database` or `new_database` fixture): the gateway gets the core's metrics and
    the settings' CORS origins."""
    from poet_grpc.config import Settings, parse_cors_origins
    from poet_grpc.api.server import create_server

    if on_postgres() and not str(db).startswith("postgresql://"):
        raise AssertionError(f"POET_TEST_DB=postgresql: the real service needs a PostgreSQL database, not {db}"
                             " (the `database` or `new_database` fixture)")
    values = dict(grpc_listen="127.0.0.1:0", gateway=False, db=db, checkpoint_seconds=30.0)
    values.update(overrides)
    settings = Settings(**values)
    server, port = await create_server(settings)
    gateway = EnvoyGateway(f"127.0.0.1:{port}", "127.0.0.1:0", metrics=server.core.metrics.exposition,
                           cors_origins=parse_cors_origins(settings.cors_origins))
    try:
        await gateway.start()
    except BaseException:
        await server.stop(grace=None)
        raise
    return RealService(server, gateway, settings)


async def stop_real_service(service: RealService) -> None:
    try:
        await service.server.stop(grace=1)
    finally:
        await service.gateway.stop()


@dataclass
class Frame:
    """One Server-Sent Event: its id (None without an id line), type and data (parsed JSON)."""

    id: str | None
    event: str
    data: dict

    @property
    def kind(self) -> str:
        """"event", "checkpoint" or "batch" (the StreamEventsResponse item), or "error"."""
        return "error" if self.event == "error" else next(iter(self.data), "")


def parse_sse(text: str) -> list[Frame]:
    """The frames of an SSE body (the subset the gateway writes: id, event, data)."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            frames.append(Frame(fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])))
    return frames


async def sse_frames(client: httpx.AsyncClient, path: str, params=None, *, headers=None,
                     until: Callable[[list[Frame]], bool], timeout: float = 10) -> list[Frame]:
    """SSE frames of path until until(frames) holds (or the stream ends); then the client hangs up."""
    frames: list[Frame] = []

    async def read() -> None:
        async with client.stream("GET", path, params=params, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            buffer = ""
            async for chunk in response.aiter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    frames.extend(parse_sse(block + "\n\n"))
                    if until(frames):
                        return

    await asyncio.wait_for(read(), timeout)
    return frames


def caught_up(frames: list[Frame]) -> bool:
    return bool(frames) and frames[-1].kind == "checkpoint" and frames[-1].data["checkpoint"]["caught_up"]
