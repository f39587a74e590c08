"""The gateway's HTTP side: the two things Envoy cannot do by itself.

1. Server-Sent Events that a browser can resume. Envoy's grpc_json_transcoder
   writes each StreamEvents message as a bare ``data:`` line, so an EventSource
   has no id to send back when it reconnects, and loses or repeats events.
   Envoy routes ``GET /api/v1/events:stream`` and
   ``GET /api/v1/functions/{function_name}/events:stream`` here instead. This
   side calls StreamEvents on the POET gRPC server as an ordinary gRPC client,
   forwarding the caller's credentials and ids, so authentication, rate limits,
   validation and the audit stay where every other call meets them; it writes
   each message as ``id: <position>`` plus the same ``data:`` JSON as before,
   and takes the ``Last-Event-ID`` header as the resume position.
   (Rejected: a Lua filter rewriting the transcoder's output would have to
   reassemble frames split across body chunks and parse JSON in Lua, per
   frame; serving SSE from the servicer itself would skip the interceptors.)
2. ``GET /metrics`` for Prometheus, from a callable given at construction.

It listens on a unix socket in a private directory: only Envoy, on this host,
reaches it. Requests are HTTP/1.1, one per connection (every answer says
``connection: close``, so Envoy never reuses a connection this side has
closed). h11, the HTTP/1.1 parser httpx already brings, parses them and bounds
what a client controls (request line, header sizes); this module is only the
loop around it. A server framework (uvicorn, hypercorn) would bring its own
lifecycle and signal handling into the server's event loop for two GET routes.

    side = HttpSide("127.0.0.1:50051", metrics=core.metrics.exposition)
    await side.start("/run/poet-side/http.sock")
    ...
    await side.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
from typing import Callable, Iterable
from urllib.parse import unquote_to_bytes

import grpc
import h11
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb

__all__ = ["HttpSide", "Metrics", "message_json", "sse_frame", "stream_request"]

_log = logging.getLogger(__name__)

Metrics = Callable[[], "tuple[bytes, str]"]
"""Returns the Prometheus exposition: (body, content type)."""

MAX_HEAD_BYTES = 64 * 1024
"""Largest request line plus headers (give or take one 16 KiB read); Envoy
already refuses more than 32 KiB."""
HEAD_TIMEOUT_SECONDS = 10.0
"""A connection must send its request head within this time."""
WRITE_STALL_SECONDS = 30.0
"""A stream whose client takes no bytes for this long is cut. Safe: the client
resumes from its Last-Event-ID, and the server stops holding a stream for it."""
MAX_CONNECTIONS = 2048
"""A backstop above the gateway's own limit (the side cluster's circuit breaker,
1024 in gateway/envoy.yaml.tmpl); past it a connection gets 503 at once."""
MAX_POSITION = 2**63 - 1

FORWARDED_HEADERS = frozenset({
    "authorization",      # who is calling: the auth interceptor
    "x-client-id",        # the rate limit's key when unauthenticated
    "x-forwarded-for",    # set by Envoy: the rate limit and the audit's client address
    "x-request-id",       # set by Envoy when the client sent none
    "x-correlation-id",
    "traceparent",        # W3C trace context
    "tracestate",
})
"""Request headers passed on to StreamEvents as gRPC metadata, as the transcoder passes them."""

_STREAM_PATH = re.compile(r"/api/v1/events:stream|/api/v1/functions/([^/]+)/events:stream")
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_POSITION = re.compile(r"[0-9]{1,19}")

# grpc code -> HTTP status, as Envoy maps them (Grpc::Utility::grpcToHttpStatus).
_HTTP_STATUS = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
                12: 501, 13: 500, 14: 503, 15: 500, 16: 401}


# -- JSON, as the transcoder prints it -------------------------------------------

_PRINT_OPTIONS = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
# protobuf's C++ printer (Envoy's transcoder) escapes these besides what JSON must.
_EXTRA_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def message_json(message) -> str:
    """``message`` as one line of JSON, as Envoy's transcoder prints it today:
    proto field names, default values printed, int64 as strings, enums by name,
    fields in field-number order, whole numbers without ``.0``, ``<``, ``>``,
    U+2028 and U+2029 escaped. (The keys of a free-form Struct come in another
    order: Envoy's is a hash's.)"""
    value = _ordered(message.DESCRIPTOR, json_format.MessageToDict(message, **_PRINT_OPTIONS))
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in _EXTRA_ESCAPES:  # these occur only inside strings
        if char in text:
            text = text.replace(char, escaped)
    return text


_FREE_FORM = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


def _ordered(descriptor: Descriptor, value: dict) -> dict:
    """MessageToDict puts unset fields last; the transcoder prints fields by number."""
    ordered = {}
    for field in descriptor.fields:
        if field.name not in value:
            continue
        item = value[field.name]
        sub = field.message_type
        if sub is None or sub.GetOptions().map_entry:
            pass
        elif sub.full_name in _FREE_FORM:
            item = _whole_numbers(item)
        elif not sub.full_name.startswith("google.protobuf."):  # Timestamp, Any...: their own JSON form
            item = [_ordered(sub, x) for x in item] if field.is_repeated else _ordered(sub, item)
        ordered[field.name] = item
    return ordered


def _whole_numbers(value):
    """A Struct's numbers are doubles; C++ prints a whole one as 1, Python as 1.0."""
    if isinstance(value, float):
        if not value.is_integer() or abs(value) >= 1e17:
            return value
        # C++'s shortest form: 15 significant digits when they round-trip, else 17.
        text = "%.15g" % value
        if float(text) != value:
            text = "%.17g" % value
        return int(value) if "e" not in text else value
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _frame(data: bytes) -> bytes:
    """The frame of a StreamEventsResponse's wire bytes. The latest small ones are
    kept: every live subscriber gets the same bytes within moments (bounded:
    at most 256 frames of messages up to 16 KiB)."""
    if len(data) > 16 * 1024:
        return sse_frame(pb.StreamEventsResponse.FromString(data))
    return _cached_frame(data)


@functools.lru_cache(maxsize=256)
def _cached_frame(data: bytes) -> bytes:
    return sse_frame(pb.StreamEventsResponse.FromString(data))


def sse_frame(message: pb.StreamEventsResponse) -> bytes:
    """One Server-Sent Event: ``id:`` is the position a client resumes after
    (an event's, a batch's last event's, a checkpoint's), then today's ``data:``."""
    kind = message.WhichOneof("item")
    position = None
    if kind == "event":
        position = message.event.position
    elif kind == "checkpoint":
        position = message.checkpoint.position
    elif kind == "batch" and message.batch.events:
        position = message.batch.events[-1].position
    head = f"id: {position}\n" if position is not None else ""
    return f"{head}data: {message_json(message)}\n\n".encode()


def _status_json(status: status_pb2.Status) -> bytes:
    try:
        return message_json(status).encode()
    except (TypeError, KeyError, json_format.Error):  # a detail of a type this process does not know
        return message_json(status_pb2.Status(code=status.code, message=status.message)).encode()


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class _Refusal(Exception):
    """An answer other than a stream: HTTP status, google.rpc.Status, extra headers."""

    def __init__(self, status: status_pb2.Status, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(status.message)
        self.status = status
        self.http_status = _HTTP_STATUS.get(status.code, 500)
        self.headers = list(headers)


def _refusal(code: int, message: str, reason: str, *details, metadata: dict[str, str] | None = None) -> _Refusal:
    """The gateway's own error shape (gateway/envoy.yaml.tmpl, local_reply_config)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain="poet.v1", metadata=metadata or {})
    return _Refusal(status_pb2.Status(code=code, message=message, details=[_pack(info), *map(_pack, details)]))


def _malformed(message: str) -> _Refusal:
    return _refusal(3, message, "MALFORMED_REQUEST")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- the request, as the transcoder builds it ----------------------------------------

_FIELDS: dict[str, FieldDescriptor] = {}
for _field in pb.StreamEventsRequest.DESCRIPTOR.fields:
    _FIELDS[_field.name] = _FIELDS[_field.json_name] = _field
_TYPE_NAMES = {FieldDescriptor.TYPE_BOOL: "TYPE_BOOL", FieldDescriptor.TYPE_INT32: "TYPE_INT32",
               FieldDescriptor.TYPE_INT64: "TYPE_INT64"}
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def _decoded(raw: str, what: str) -> str:
    """Percent-decoded like the transcoder (``+`` stays ``+``, a bad escape stays
    as it is), and UTF-8 (the transcoder passes bad UTF-8 on; the server then fails)."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(f"{what}: invalid value, not UTF-8 once percent-decoded") from None


def _value(field: FieldDescriptor, value: str):
    if field.type == FieldDescriptor.TYPE_STRING:
        return value
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
    elif _INTEGER.fullmatch(value) and len(value.lstrip("+-").lstrip("0")) <= 19:
        number, bits = int(value), 63 if field.type == FieldDescriptor.TYPE_INT64 else 31
        if -(2**bits) <= number < 2**bits:
            return number
    raise _malformed(f'{field.name}: invalid value "{_clip(value)}" for type {_TYPE_NAMES[field.type]}')


def stream_request(function_name: str | None, query: str, last_event_id: str | None = None) -> pb.StreamEventsRequest:
    """The StreamEventsRequest of a REST call, or _Refusal (400).

    ``function_name`` is the raw path segment (None on the global path), ``query``
    the raw query string. Parameters map to fields as the transcoder maps them:
    by proto or JSON name, the last of a repeated one wins, a function_name
    parameter overrides the path's, unknown ones are refused.

    ``Last-Event-ID`` (an EventSource sends it when it reconnects), when present,
    wins over ``after_position`` and ``live_only``: the browser reconnects to the
    URL it was first given, so the header is always the newer position.
    """
    request = pb.StreamEventsRequest()
    if function_name is not None:
        request.function_name = _decoded(function_name, "function_name")
    for part in query.split("&") if query else ():
        raw_key, equals, raw_value = part.partition("=")
        if not equals or not raw_key:  # "?flag" and "?=x": the transcoder ignores them
            continue
        name, dot, _ = _decoded(raw_key, "a parameter name").partition(".")
        field = _FIELDS.get(name)
        if field is None:
            raise _malformed(
                f'Could not find field "{_clip(raw_key.split(".", 1)[0])}" in the type "poet.v1.StreamEventsRequest".')
        if dot:
            raise _malformed(
                f'Encountered a non-leaf field "{field.name}" that is not a message while parsing a field path')
        setattr(request, field.name, _value(field, _decoded(raw_value, field.name)))
    if last_event_id:  # an EventSource whose last id was empty sends none (or an empty one)
        if not _POSITION.fullmatch(last_event_id) or int(last_event_id) > MAX_POSITION:
            description = (f"must be a log position (an integer from 0 to {MAX_POSITION}), "
                           f"not {json.dumps(_clip(last_event_id, 64))}")
            violation = error_details_pb2.BadRequest.FieldViolation(field="Last-Event-ID", description=description)
            raise _refusal(3, f"Last-Event-ID {description}", "INVALID_LAST_EVENT_ID",
                           error_details_pb2.BadRequest(field_violations=[violation]))
        request.after_position = int(last_event_id)
        request.live_only = False
    return request


def _grpc_refusal(error: grpc.aio.AioRpcError) -> _Refusal:
    """The JSON error the transcoder gives for a failed call (convert_grpc_status)."""
    status, headers = None, []
    for key, value in error.trailing_metadata() or ():
        if key == rpc_status.GRPC_DETAILS_METADATA_KEY and isinstance(value, bytes):
            with contextlib.suppress(Exception):
                status = status_pb2.Status.FromString(value)
        elif isinstance(value, str) and not key.startswith("grpc-") and _METADATA_VALUE.fullmatch(value):
            headers.append((key, value))  # as the transcoder does: retry-after, www-authenticate...
    if status is None and error.code() == grpc.StatusCode.UNAVAILABLE:
        # The channel's own error (the server is not reachable): the gateway's
        # 503, not the channel's text (it names the socket path).
        refusal = _refusal(14, "the POET server is unavailable", "UPSTREAM_UNAVAILABLE",
                           error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)))
        refusal.headers.append(("retry-after", "1"))
        return refusal
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return _Refusal(status, headers)


# -- the server ---------------------------------------------------------------------

class HttpSide:
    """Serves the SSE stream routes and /metrics on a unix socket, for Envoy.

    ``grpc_target`` is the POET gRPC server, as a gRPC channel target
    ("127.0.0.1:50051", "unix:/path"); ``metrics`` answers GET /metrics
    (404 when None).
    """

    def __init__(self, grpc_target: str, *, metrics: Metrics | None = None) -> None:
        self.grpc_target = grpc_target
        self.metrics = metrics
        self._server: asyncio.AbstractServer | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stream_events = None
        self._handlers: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.socket_path: str | None = None

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    async def start(self, socket_path: str) -> None:
        """Listen on ``socket_path`` (its directory should be private to this user)."""
        # Streams may carry batches of up to 1000 events: no size limit of the
        # client's own, as the transcoder has none; the server bounds them.
        self._channel = grpc.aio.insecure_channel(self.grpc_target, options=[("grpc.max_receive_message_length", -1)])
        # Messages arrive as their wire bytes: a live event goes to every
        # subscriber in the same bytes, so it is printed once for all of them (_frame).
        self._stream_events = self._channel.unary_stream(
            "/poet.v1.PoetService/StreamEvents", request_serializer=pb.StreamEventsRequest.SerializeToString)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        self._server = await asyncio.start_unix_server(self._accept, path=socket_path, limit=MAX_HEAD_BYTES)
        os.chmod(socket_path, 0o600)
        self.socket_path = socket_path

    def abort_connections(self) -> int:
        """Cut every open connection at once, as a network failure would; returns how many."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers)

    async def stop(self) -> None:
        """Stop listening, cut open connections, close the channel. Idempotent."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.abort_connections()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    # -- one connection, one request ----------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        answered = False
        try:
            await self._serve_connection(reader, writer)
            answered = True
        except (ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass  # Envoy went away, the client stalled, or the answer had begun
        except Exception:  # noqa: BLE001 - one connection's failure must not reach the loop
            _log.exception("HTTP side: a request failed")
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            if answered:
                writer.close()
            else:  # close() would wait for a stalled peer to take the rest, for ever
                writer.transport.abort()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_SECONDS):
                request = await self._read_head(connection, reader)
        except h11.RemoteProtocolError as error:  # e.g. a head over MAX_HEAD_BYTES: 431
            await self._reply(connection, writer, _malformed(f"malformed HTTP request: {error}"),
                              http_status=error.error_status_hint)
            return
        if request is None:
            return
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers]
        try:
            if len(self._writers) > MAX_CONNECTIONS:
                refusal = _refusal(14, "too many open streams", "UPSTREAM_UNAVAILABLE")
                refusal.headers.append(("retry-after", "1"))
                raise refusal
            if request.method != b"GET":
                raise _refusal(5, f"{request.method.decode('ascii', 'replace')} {_clip(path)} is not served here",
                               "UNKNOWN_PATH")
            if path == "/metrics":
                await self._metrics(connection, writer)
                return
            match = _STREAM_PATH.fullmatch(path)
            if match is None:
                raise _refusal(5, f"{_clip(path)} is not served here", "UNKNOWN_PATH")
            last_event_id = next((v for k, v in headers if k == "last-event-id"), None)
            message = stream_request(match[1], query, last_event_id)
            metadata = [(k, v) for k, v in headers if k in FORWARDED_HEADERS and _METADATA_VALUE.fullmatch(v)]
            # The audit log records which REST path a call came by.
            if _METADATA_VALUE.fullmatch(target):
                metadata += [("x-envoy-original-method", "GET"), ("x-envoy-original-path", target)]
            await self._stream(connection, reader, writer, message, metadata)
        except _Refusal as refusal:
            await self._reply(connection, writer, refusal)

    @staticmethod
    async def _read_head(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(16384))

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.transport.is_closing():  # cut, or Envoy went away
            raise ConnectionResetError("the connection is closed")
        writer.write(data)
        # Envoy takes no more when its client does not read: past the stall
        # limit the stream is cut (TimeoutError ends this connection). Nothing
        # buffered (the usual case): nothing to wait for, and no timer to set.
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(WRITE_STALL_SECONDS):
                await writer.drain()

    async def _reply(self, connection: h11.Connection, writer: asyncio.StreamWriter, refusal: _Refusal,
                     http_status: int | None = None) -> None:
        await self._respond(connection, writer, http_status or refusal.http_status, _status_json(refusal.status),
                            "application/json", refusal.headers)

    async def _respond(self, connection: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes,
                       content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        response = h11.Response(status_code=status, headers=[
            ("content-type", content_type), ("content-length", str(len(body))), *headers, ("connection", "close")])
        await self._write(writer, connection.send(response) + connection.send(h11.Data(data=body))
                          + connection.send(h11.EndOfMessage()))

    async def _metrics(self, connection: h11.Connection, writer: asyncio.StreamWriter) -> None:
        if self.metrics is None:
            raise _refusal(5, "metrics are not served by this process", "UNKNOWN_PATH")
        try:
            body, content_type = self.metrics()
        except Exception:  # noqa: BLE001
            _log.exception("HTTP side: collecting the metrics failed")
            raise _refusal(13, "the metrics could not be collected", "METRICS_FAILED") from None
        await self._respond(connection, writer, 200, body, content_type)

    async def _stream(self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: pb.StreamEventsRequest, metadata: list[tuple[str, str]]) -> None:
        assert self._stream_events is not None
        call = self._stream_events(request, metadata=metadata)
        try:
            # The server sends its headers with the first message (a checkpoint
            # comes as soon as the backlog is read), or fails without any: wait
            # for it, as the transcoder does, so an error is still a JSON answer.
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as error:
                raise _grpc_refusal(error) from None
            response = h11.Response(status_code=200, headers=[
                ("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("connection", "close")])
            await self._write(writer, connection.send(response))
            pump = asyncio.create_task(self._pump(connection, writer, call, first))
            hangup = asyncio.create_task(self._until_hangup(reader))
            try:
                await asyncio.wait({pump, hangup}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                pump.cancel()  # when the client went away first (or this side stops)
                hangup.cancel()
                await asyncio.wait({pump, hangup})
            if not hangup.cancelled():
                hangup.exception()  # retrieved: a reset connection is no news
            if not pump.cancelled():
                pump.result()  # a stalled or lost connection ends this one
        finally:
            call.cancel()

    async def _pump(self, connection: h11.Connection, writer: asyncio.StreamWriter, call, message) -> None:
        try:
            while message is not grpc.aio.EOF:
                await self._write(writer, connection.send(h11.Data(data=_frame(message))))
                message = await call.read()
        except grpc.aio.AioRpcError as error:
            # Mid-stream the HTTP status is sent already: the error is an SSE event
            # of its own (EventSource: addEventListener("error", e => e.data)).
            body = _status_json(_grpc_refusal(error).status).decode()
            await self._write(writer, connection.send(h11.Data(data=f"event: error\ndata: {body}\n\n".encode())))
        await self._write(writer, connection.send(h11.EndOfMessage()))

    @staticmethod
    async def _until_hangup(reader: asyncio.StreamReader) -> None:
        """Returns when Envoy closes the connection (its client went away)."""
        while await reader.read(4096):
            pass
