"""The shell client behind `poet-grpc enhance | versions | feedback | events ...`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from poet_grpc._gen.poet.v1 import events_pb2, poet_service_pb2 as pb, poet_service_pb2_grpc, resources_pb2

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_NOT_SERVING = 0, 1, 3, 4


def _print(message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2), flush=True)


def _print_line(message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None), flush=True)


def _read(path: Path) -> str:
    """The input file's text. A bad input file is a usage error (ValueError: exit 2)."""
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def describe_error(error: grpc.RpcError) -> str:
    """One readable paragraph: code, message, and the google.rpc details."""
    lines = [f"error: {error.code().name}: {error.details()}"]
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                if kind is error_details_pb2.BadRequest:
                    lines += [f"  {v.field}: {v.description}" for v in message.field_violations]
                elif kind is error_details_pb2.ErrorInfo:
                    extra = "".join(f" {k}={v}" for k, v in sorted(message.metadata.items()))
                    lines.append(f"  reason: {message.reason}{extra}")
                else:
                    lines.append(f"  retry after {message.retry_delay.ToTimedelta().total_seconds():g}s")
    return "\n".join(lines)


class _Credential(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends ``authorization: Bearer <token>`` with every call."""

    def __init__(self, token: str):
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details):
        return details._replace(metadata=tuple(details.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)


def _read_pem(what: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def open_channel(address: str, *, token: str = "", tls_ca: str = "", client_cert: str = "",
                 client_key: str = "") -> grpc.Channel:
    """A channel to the service: TLS when a CA is given (mTLS with a client
    certificate), and the bearer token on every call when one is given."""
    if tls_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read_pem("--tls-ca", tls_ca),
            private_key=_read_pem("--client-key", client_key) if client_key else None,
            certificate_chain=_read_pem("--client-cert", client_cert) if client_cert else None,
        )
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    return grpc.intercept_channel(channel, _Credential(token)) if token else channel


def run(args, address: str) -> int:
    channel = open_channel(address, token=args.token or "", tls_ca=args.tls_ca or "",
                           client_cert=args.client_cert or "", client_key=args.client_key or "")
    with channel:
        try:
            if args.command == "health":
                return _health(channel, args)
            return COMMANDS[args.command](poet_service_pb2_grpc.PoetServiceStub(channel), args)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not _reachable(channel):
                print(f"poet-grpc: cannot reach the server at {address} ({error.code().name})", file=sys.stderr)
                return EXIT_UNREACHABLE
            print(describe_error(error), file=sys.stderr)
            return EXIT_REFUSED


def _reachable(channel: grpc.Channel) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=0.5)
        return True
    except grpc.FutureTimeoutError:
        return False


def _health(channel, args) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=args.timeout)
    except grpc.RpcError as error:
        unreachable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        print(f"poet-grpc: health check failed: {error.code().name}", file=sys.stderr)
        return EXIT_UNREACHABLE if unreachable else EXIT_REFUSED
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_NOT_SERVING


def _enhance(stub, args) -> int:
    request = pb.EnhanceRequest(
        function_name=args.function,
        original_code=_read(args.file),
        domain=args.domain,
        optimize_for=args.optimize_for,
        context=resources_pb2.EnhancementContext(module=args.module),
        request_id=args.request_id,
    )
    response = stub.Enhance(request, timeout=args.timeout)
    if args.output:
        args.output.write_text(response.enhanced_code.python)
        print(f"wrote {response.function_name} {response.version} to {args.output}", file=sys.stderr)
        response.ClearField("enhanced_code")  # the code is in the file; keep stdout short
    _print(response)
    return EXIT_OK


def _versions(stub, args) -> int:
    token = ""
    first = True
    while first or token:
        first = False
        response = stub.ListVersions(pb.ListVersionsRequest(function_name=args.function, page_token=token), timeout=args.timeout)
        _print(response)
        token = response.next_page_token
    return EXIT_OK


def _version(stub, args) -> int:
    _print(stub.GetVersion(pb.GetVersionRequest(function_name=args.function, version=args.version), timeout=args.timeout))
    return EXIT_OK


def _activate(stub, args) -> int:
    request = pb.ActivateVersionRequest(function_name=args.function, version=args.version, reason=args.reason)
    _print(stub.ActivateVersion(request, timeout=args.timeout))
    return EXIT_OK


def _deprecate(stub, args) -> int:
    request = pb.DeprecateVersionRequest(function_name=args.function, version=args.version, reason=args.reason)
    _print(stub.DeprecateVersion(request, timeout=args.timeout))
    return EXIT_OK


def _feedback(stub, args) -> int:
    request = pb.SubmitFeedbackRequest(
        function_name=args.function,
        version=args.version,
        feedback_type=pb.FeedbackType.Value(args.type),
        execution_id=args.execution_id,
        comments=args.comments,
        suggestions=args.suggestion,
        request_id=args.request_id,
    )
    if args.rating is not None:
        request.rating = args.rating
    if any(v is not None for v in (args.success_rate, args.avg_duration, args.error_rate)):
        request.metrics.success_rate = args.success_rate or 0.0
        request.metrics.avg_duration = args.avg_duration or 0.0
        request.metrics.error_rate = args.error_rate or 0.0
    _print(stub.SubmitFeedback(request, timeout=args.timeout))
    return EXIT_OK


def _events(stub, args) -> int:
    if args.follow:
        # Batched: a busy log streams far faster in batches than one event per message.
        request = pb.StreamEventsRequest(
            function_name=args.function, event_type=args.type, correlation_id=args.correlation_id,
            after_position=args.after, max_batch_size=500,
        )
        for item in stub.StreamEvents(request):
            for event in item.batch.events:
                _print_line(event)
        return EXIT_OK
    printed, token = 0, ""
    while True:
        page = min(1000, args.limit - printed) if args.limit else 1000
        request = pb.ListEventsRequest(
            function_name=args.function,
            event_type=args.type,
            correlation_id=args.correlation_id,
            page_size=page,
            page_token=token,
        )
        response = stub.ListEvents(request, timeout=args.timeout)
        for event in response.events:
            _print_line(event)
        printed += len(response.events)
        token = response.next_page_token
        if not token or (args.limit and printed >= args.limit):
            return EXIT_OK


def _publish(stub, args) -> int:
    # Input that is not events is a usage error (ValueError: exit 2), not a refusal by the server.
    try:
        data = json.loads(_read(args.file))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.file} is not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{args.file} does not hold events: expected an event object or a list of them")
    try:
        events = [json_format.ParseDict(item, events_pb2.Event()) for item in items]
    except json_format.ParseError as exc:
        raise ValueError(f"{args.file} does not hold events: {exc}") from None
    _print(stub.PublishEvents(pb.PublishEventsRequest(events=events), timeout=args.timeout))
    return EXIT_OK


def _domains(stub, args) -> int:
    _print(stub.ListDomains(pb.ListDomainsRequest(), timeout=args.timeout))
    return EXIT_OK


COMMANDS = {
    "enhance": _enhance,
    "versions": _versions,
    "version": _version,
    "activate": _activate,
    "deprecate": _deprecate,
    "feedback": _feedback,
    "events": _events,
    "publish": _publish,
    "domains": _domains,
}
