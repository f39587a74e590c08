"""Builds and runs the gRPC server: servicer, health, reflection, interceptors,
graceful stop; `serve()` adds the Envoy REST gateway and signal handling."""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from poet_grpc._gen.poet.v1 import poet_service_pb2, poet_service_pb2_grpc, probes_pb2, probes_pb2_grpc
from poet_grpc.config import Settings, parse_cors_origins, redacted_db
from poet_grpc.core.app import Core
from poet_grpc.api.interceptors import ErrorMappingInterceptor, ValidationInterceptor
from poet_grpc.api.interceptors._credentials import Authenticator, load_auth_file
from poet_grpc.api.interceptors.audit import AuditInterceptor, open_audit_log
from poet_grpc.api.interceptors.auth import AuthInterceptor
from poet_grpc.api.interceptors.metrics import MetricsInterceptor
from poet_grpc.api.interceptors.rate_limit import RateLimitInterceptor
from poet_grpc.api.probes import ProbeServicer
from poet_grpc.api.servicer import PoetServicer
from poet_grpc.observability import tracing
from poet_grpc.observability.logs import console

log = logging.getLogger(__name__)
SERVICE_NAME = poet_service_pb2.DESCRIPTOR.services_by_name["PoetService"].full_name
PROBE_SERVICE_NAME = probes_pb2.DESCRIPTOR.services_by_name["ProbeService"].full_name


class PoetServer:
    """A started server. stop() is the graceful path: health turns NOT_SERVING,
    streams end, in-flight calls get the grace period, then storage closes."""

    def __init__(self, server: grpc.aio.Server, core: Core, health_servicer: health.aio.HealthServicer, port: int,
                 probes: ProbeServicer | None = None):
        self.grpc_server = server
        self.core = core
        self.health = health_servicer
        self.port = port
        self.probes = probes
        self.authentication = "off"
        """How callers authenticate ("off" without an auth file)."""
        self.tracer_provider = None
        """Where this server's spans go (None: tracing is off); flushed by stop()."""
        self._stopped = False

    async def begin_shutdown(self) -> None:
        """Readiness turns not_ready and health NOT_SERVING; calls are still served."""
        if self.probes is not None:
            self.probes.begin_shutdown()
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.begin_shutdown()
        self.core.events.close()
        await self.grpc_server.stop(grace)
        await self.core.close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(tracing.shutdown, self.tracer_provider)  # exports what is left

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


MAX_METADATA_BYTES = 64 * 1024
"""Request headers the gRPC server accepts: above the REST gateway's own limit
(32 KiB), so an oversized header is refused there with a clear 431, never by
gRPC with a status that looks like a rate limit."""


def _interceptors(settings: Settings, authenticator: Authenticator | None,
                  tracer_provider=None) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the RPC's span (when tracing is on) holds everything else;
    audit (and the server log's line per call) sees every outcome; errors are mapped
    for all the others; who is calling is known before rate limits and validation. (The
    metrics interceptor goes in front of all of these once the core, which owns
    the metrics, is open: see create_server.)"""
    chain: list[grpc.aio.ServerInterceptor] = []
    if tracer_provider is not None:
        chain.append(tracing.server_interceptor(tracer_provider))  # the RPC's span: every other line is in it
    chain.append(AuditInterceptor(open_audit_log(settings.audit_log) if settings.audit_log else None))
    return chain + [ErrorMappingInterceptor(), AuthInterceptor(authenticator), RateLimitInterceptor(settings),
                    ValidationInterceptor(settings)]


def _server_credentials(settings: Settings) -> grpc.ServerCredentials:
    def read(name: str, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise OSError(f"cannot read {name} {path}: {exc.strerror or exc}") from None

    client_ca = read("tls_client_ca", settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read("tls_key", settings.tls_key), read("tls_cert", settings.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def create_server(settings: Settings, *, gateway_socket: str = "") -> tuple[PoetServer, int]:
    """Open the store, bind settings.grpc_listen, start serving; returns the server and its bound port.

    ``gateway_socket``: also serve plaintext on this unix socket (a private
    path), for a gateway on the same host when the TCP port speaks TLS."""
    # A bad auth file stops startup before anything opens.
    authenticator = load_auth_file(settings.auth_file) if settings.auth_file else None
    tracer_provider = tracing.configure()  # None unless OTEL_* asks for traces
    interceptors = _interceptors(settings, authenticator, tracer_provider)
    credentials = _server_credentials(settings) if settings.tls_cert else None
    core = await Core.open(settings)
    server = grpc.aio.server(
        # Metrics outermost: they count the code the client gets, refusals included.
        interceptors=[MetricsInterceptor(core.metrics), *interceptors],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    poet_service_pb2_grpc.add_PoetServiceServicer_to_server(PoetServicer(core, settings), server)
    probes = ProbeServicer(core, settings, authentication=authenticator.mode if authenticator else "off")
    probes_pb2_grpc.add_ProbeServiceServicer_to_server(probes, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, PROBE_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    try:
        if credentials is not None:
            port = server.add_secure_port(settings.grpc_listen, credentials)
        else:
            port = server.add_insecure_port(settings.grpc_listen)
        if gateway_socket:
            server.add_insecure_port(f"unix:{gateway_socket}")
    except RuntimeError as exc:
        await core.close()
        raise OSError(f"cannot listen on {settings.grpc_listen} for gRPC: {exc}") from None
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    poet_server = PoetServer(server, core, health_servicer, port, probes)
    poet_server.authentication = authenticator.describe if authenticator else "off"
    poet_server.tracer_provider = tracer_provider
    return poet_server, port


def _tune_gc() -> None:
    """Objects made at startup (modules, the generator's tables, the servicers) live
    as long as the process: freeze them out of every garbage-collection pass, so
    full collections walk only what serving allocates. (Raising the collection
    thresholds instead was measured and rejected: each young collection then paused
    the loop for 10-60 ms, which showed in the publish-ack p95.)"""
    gc.freeze()


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    Envoy starts once the gRPC server serves, with a config rendered from the
    listen addresses. If Envoy dies, the service stops and returns 1 (no restart
    here: the process supervisor, e.g. Kubernetes, restarts the pair, so a crash
    loop shows). On SIGTERM, readiness turns 503 for shutdown_drain_seconds while
    calls are still served (not on SIGINT: Ctrl-C stops at once), then gRPC drains
    in-flight calls, then Envoy stops."""
    exposed = settings.exposed_without_auth()
    if exposed and not settings.insecure:
        raise InsecureRefused(
            f"{' and '.join(f'{n}={getattr(settings, n)}' for n in exposed)} is reachable beyond this host and no"
            " auth file is set, so anyone could call every method: set --auth-file (POET_AUTH_FILE), listen on"
            " 127.0.0.1, or pass --insecure (POET_INSECURE=true) to serve without authentication anyway"
        )
    # With TLS on the gRPC port, the local gateway talks to the server over a
    # private unix socket instead, so it needs no certificate of its own.
    socket_dir = tempfile.mkdtemp(prefix="poet-grpc-") if settings.tls_cert and settings.gateway else ""
    gateway_socket = str(Path(socket_dir) / "grpc.sock") if socket_dir else ""
    try:
        return await _serve(settings, gateway_socket)
    finally:
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)


class InsecureRefused(Exception):
    """serve() will not expose an unauthenticated server unless told --insecure."""


async def _serve(settings: Settings, gateway_socket: str) -> int:
    from poet_grpc.api.gateway import EnvoyGateway, GatewayError

    server, port = await create_server(settings, gateway_socket=gateway_socket)
    _tune_gc()
    host = settings.grpc_listen.rpartition(":")[0]
    grpc_address = f"{host}:{port}"
    scheme = " (TLS" + (", client certificates required)" if settings.tls_client_ca else ")") if settings.tls_cert else ""
    console.info(f"gRPC listening on {grpc_address}{scheme} (db {redacted_db(settings.db)})")
    console.info(f"code sandbox: {server.core.sandbox.describe()}")
    if server.core.sandbox.isolation != "namespaces":
        console.warning("submitted code is not confined (--sandbox process); see the README")
    if settings.auth_file:
        console.info(f"authentication: {server.authentication}")
    else:
        console.info("authentication: off (no auth file): every caller may call every method")
        if settings.exposed_without_auth():
            console.warning("serving without authentication beyond loopback (--insecure)")
    if settings.audit_log:
        console.info(f"audit log: {'stderr' if settings.audit_log == '-' else settings.audit_log}")
    gateway = None
    exit_code = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted = []  # Ctrl-C at a terminal: no load balancer to tell, so no drain
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: (interrupted.append(True), stop.set()))
    try:
        if settings.gateway:
            upstream = f"unix:{gateway_socket}" if gateway_socket else grpc_address
            tls = (settings.tls_cert, settings.tls_key, settings.tls_client_ca) if settings.tls_cert else None
            # GET /metrics on the REST port.
            gateway = EnvoyGateway(upstream, settings.http_listen, tls=tls, metrics=server.core.metrics.exposition,
                                   cors_origins=parse_cors_origins(settings.cors_origins))
            try:
                await gateway.start()
            except GatewayError as exc:
                console.error(f"gateway failed to start: {exc}")
                return 1
            rest_scheme = "https" if settings.tls_cert else "http"
            console.info(f"REST gateway listening on {rest_scheme}://{settings.http_listen.rpartition(':')[0]}:{gateway.http_port}")
            gateway_exit = asyncio.create_task(gateway.wait())
            stop_wait = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({gateway_exit, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if gateway_exit in done and not stop.is_set():
                console.error(f"gateway exited unexpectedly (code {gateway.returncode}); stopping")
                exit_code = 1
            for task in (gateway_exit, stop_wait):
                task.cancel()
        else:
            await stop.wait()
        if exit_code == 0 and settings.shutdown_drain_seconds > 0 and not interrupted:
            await server.begin_shutdown()  # /health/ready answers 503 while calls are still served
            console.info(f"not ready; serving {settings.shutdown_drain_seconds:g}s more")
            await asyncio.sleep(settings.shutdown_drain_seconds)
        console.info("stopping (draining in-flight calls)")
    finally:
        # gRPC first, Envoy last: REST calls in flight finish through Envoy within the grace period.
        try:
            await server.stop(settings.shutdown_grace_seconds)
        finally:
            if gateway is not None:
                await gateway.stop()
    console.info("stopped")
    return exit_code
