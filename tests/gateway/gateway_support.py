"""The real service for gateway tests: create_server() (store, core, interceptors)
behind a real Envoy. (A module of its own: two conftest.py files share one name.)"""

from __future__ import annotations

from poet_grpc.api.gateway import EnvoyGateway


class RealService:
    """A real POET gRPC server on port 0 and an Envoy gateway in front of it."""

    def __init__(self, server, gateway: EnvoyGateway, settings):
        self.server = server
        self.gateway = gateway
        self.settings = settings
        self.grpc_address = f"127.0.0.1:{server.port}"
        self.url = f"http://127.0.0.1:{gateway.http_port}"


async def start_real_service(tmp_path, **overrides) -> RealService:
    from poet_grpc.config import Settings
    from poet_grpc.api.server import create_server

    values = dict(grpc_listen="127.0.0.1:0", gateway=False, db=tmp_path / "poet.db", checkpoint_seconds=30.0)
    values.update(overrides)
    settings = Settings(**values)
    server, port = await create_server(settings)
    gateway = EnvoyGateway(f"127.0.0.1:{port}", "127.0.0.1:0")
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
