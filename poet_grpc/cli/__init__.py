"""poet-grpc: run the POET service, or use it from a shell.

    poet-grpc serve                      gRPC + REST gateway on a SQLite file
    poet-grpc gateway --grpc HOST:PORT   only the REST gateway, in front of a running server
    poet-grpc enhance FILE --function NAME [--domain D]
    poet-grpc versions NAME | version NAME VERSION
    poet-grpc activate NAME VERSION | deprecate NAME VERSION
    poet-grpc feedback NAME --version v1 --type user --rating 4
    poet-grpc events [--function NAME] [--type T] [--follow]
    poet-grpc publish FILE.json | domains | health

Client commands print JSON on stdout (events: one JSON object per line) and
errors on stderr. Exit codes: 0 ok, 1 the server refused the request,
2 bad command line or input file (missing, not JSON, not events), 3 the server
could not be reached, 4 not serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from poet_grpc.config import Settings, parse_cors_origins

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_SERVING = 0, 1, 2, 3, 4


def _version() -> str:
    """The installed distribution's version; poet_grpc.__version__ (if any) for a
    source tree that was never installed."""
    from importlib import metadata

    try:
        return metadata.version("poet-grpc")
    except metadata.PackageNotFoundError:
        import poet_grpc

        return getattr(poet_grpc, "__version__", "unknown")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poet-grpc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="what to do (poet-grpc COMMAND --help for its options)")
    defaults = Settings()

    serve = commands.add_parser("serve", help="run the gRPC server and the REST gateway")
    serve.add_argument("--grpc-listen", help=f"gRPC host:port [env POET_GRPC_LISTEN, default {defaults.grpc_listen}]")
    serve.add_argument("--http-listen", help=f"REST gateway host:port [env POET_HTTP_LISTEN, default {defaults.http_listen}]")
    serve.add_argument("--no-gateway", action="store_true", help="serve gRPC only, without the Envoy REST gateway")
    serve.add_argument("--db", help=f"SQLite file, or a postgresql:// URL [env POET_DB, default {defaults.db}]")
    serve.add_argument(
        "--sandbox", choices=("namespaces", "process"),
        help="where submitted code runs: namespaces (the sandbox) or process (weaker, for hosts without "
             "namespaces; see the README) [env POET_SANDBOX, default namespaces]",
    )
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING..., optionally with logger=LEVEL pairs for other"
                                           f" libraries: DEBUG,httpx=DEBUG [env POET_LOG_LEVEL, default {defaults.log_level}]")
    serve.add_argument("--log-format", choices=("text", "json"),
                       help="text, or json: one JSON object per line, for a log collector"
                            f" [env POET_LOG_FORMAT, default {defaults.log_format}]")
    serve.add_argument("--auth-file", help="JSON file of API keys and JWT settings; without one every caller may call"
                                           " every method, allowed only on loopback [env POET_AUTH_FILE]")
    serve.add_argument("--insecure", action="store_true",
                       help="serve without an auth file on a non-loopback address anyway [env POET_INSECURE]")
    serve.add_argument("--audit-log", help="append one JSON line per call to this file ('-' for stderr) [env POET_AUDIT_LOG]")
    serve.add_argument("--tls-cert", help="PEM certificate chain: TLS on the gRPC port and the REST listener [env POET_TLS_CERT]")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert [env POET_TLS_KEY]")
    serve.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mTLS)"
                                               " [env POET_TLS_CLIENT_CA]")
    serve.add_argument("--cors-origins", help="comma-separated origins (scheme://host[:port]) whose browser pages may"
                                              " call the REST API [env POET_CORS_ORIGINS, default none]")

    gateway = commands.add_parser("gateway", help="run only the Envoy REST gateway in front of a running gRPC server")
    gateway.add_argument("--grpc", default=None, help="the gRPC server's host:port [default: POET_GRPC_LISTEN or 127.0.0.1:50051]")
    gateway.add_argument("--http-listen", help=f"REST host:port [env POET_HTTP_LISTEN, default {defaults.http_listen}]")

    def client(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--server", default=None, help="gRPC address of the service [default: POET_GRPC_LISTEN or 127.0.0.1:50051]"
        )
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer [default 60]")
        sub.add_argument("--token", default=os.environ.get("POET_TOKEN", ""),
                         help="API key or JWT sent as 'authorization: Bearer' [env POET_TOKEN]")
        sub.add_argument("--tls-ca", default=os.environ.get("POET_TLS_CA", ""),
                         help="PEM CA bundle to verify the server with: connect over TLS [env POET_TLS_CA]")
        sub.add_argument("--client-cert", default=os.environ.get("POET_CLIENT_CERT", ""),
                         help="with --tls-ca: PEM client certificate, for servers that require one [env POET_CLIENT_CERT]")
        sub.add_argument("--client-key", default=os.environ.get("POET_CLIENT_KEY", ""),
                         help="PEM private key of --client-cert [env POET_CLIENT_KEY]")
        return sub

    enhance = client("enhance", "enhance the function defined in a Python file")
    enhance.add_argument("file", type=Path, help="Python file that defines the function ('-' for stdin)")
    enhance.add_argument("--function", required=True, help="name of the function to enhance")
    enhance.add_argument("--domain", default="", help="domain rules to apply (see: poet-grpc domains)")
    enhance.add_argument("--optimize-for", default="", help="reliability (default), performance or safety")
    enhance.add_argument("--module", default="",
                         help="dotted name of the module the file is, e.g. mypkg.text: its relative imports resolve "
                              "against that package, and the function is then known as mypkg.text.FUNCTION")
    enhance.add_argument("--request-id", default="", help="idempotency key: a retry with the same key changes nothing")
    enhance.add_argument("-o", "--output", type=Path, help="also write the enhanced Python module to this file")

    versions = client("versions", "list the versions of a function")
    versions.add_argument("function", help="function name, bare or qualified by its module (mypkg.text.first)")

    version = client("version", "show one version with its code")
    version.add_argument("function", help="function name, bare or qualified by its module (mypkg.text.first)")
    version.add_argument("version", help='version label, e.g. v2, or "current"')

    activate = client("activate", "make a version current again (rollback)")
    activate.add_argument("function", help="function name, bare or qualified by its module (mypkg.text.first)")
    activate.add_argument("version", help="version label, e.g. v1")
    activate.add_argument("--reason", default="", help="why, for the event log")

    deprecate = client("deprecate", "mark a version deprecated (not the current one)")
    deprecate.add_argument("function", help="function name, bare or qualified by its module (mypkg.text.first)")
    deprecate.add_argument("version", help="version label, e.g. v1")
    deprecate.add_argument("--reason", default="", help="why, for the event log")

    feedback = client("feedback", "send feedback on a version")
    feedback.add_argument("function", help="function name, bare or qualified by its module (mypkg.text.first)")
    feedback.add_argument("--version", required=True, help="version label, e.g. v1")
    feedback.add_argument("--type", required=True, choices=["performance", "error", "user", "system"],
                          help="kind of feedback: performance, error, user or system")
    feedback.add_argument("--rating", type=float, help="1 to 5")
    feedback.add_argument("--comments", default="", help="free-text comments")
    feedback.add_argument("--execution-id", default="", help="id of the execution the feedback is about")
    feedback.add_argument("--success-rate", type=float, help="observed share of successful calls, 0 to 1")
    feedback.add_argument("--avg-duration", type=float, help="observed average duration of a call, in milliseconds")
    feedback.add_argument("--error-rate", type=float, help="observed share of failed calls, 0 to 1")
    feedback.add_argument("--suggestion", action="append", default=[], help="a suggested improvement; may be repeated")
    feedback.add_argument("--request-id", default="", help="idempotency key: a retry with the same key changes nothing")

    events = client("events", "list logged events, or follow them live")
    events.add_argument("--function", default="", help="only events about this function")
    events.add_argument("--type", default="", help="only events of this type")
    events.add_argument("--correlation-id", default="", help="only events with this correlation id")
    events.add_argument("--limit", type=int, default=0, help="stop after this many events (list mode)")
    events.add_argument("--follow", action="store_true", help="keep streaming new events until interrupted")
    events.add_argument("--after", type=int, default=0, help="with --follow: start after this log position")

    publish = client("publish", "append events from a JSON file (an event object or a list of them)")
    publish.add_argument("file", type=Path, help="JSON file ('-' for stdin)")

    client("domains", "list the domains and their parameters")
    client("health", "check the server's health (exit 0 serving, 3 unreachable, 4 not serving)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "gateway":
            return _gateway(args)
        from poet_grpc.cli import client

        return client.run(args, _server_address(args))
    except ValueError as exc:  # bad settings from flags or environment, or a bad input file
        print(f"poet-grpc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _server_address(args) -> str:
    return args.server or os.environ.get("POET_GRPC_LISTEN") or Settings().grpc_listen


def _serve(args) -> int:
    # Envoy is started with fork+exec; gRPC's fork handlers only add log noise
    # there. Must be set before grpc is imported.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from poet_grpc.api.server import serve

    settings = Settings.from_env(
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
        db=args.db,
        log_level=args.log_level,
        log_format=args.log_format,
        sandbox=args.sandbox,
        gateway=False if args.no_gateway else None,
        auth_file=args.auth_file,
        insecure=True if args.insecure else None,
        audit_log=args.audit_log,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        cors_origins=args.cors_origins,
    )
    from poet_grpc.observability import logs

    logs.configure(settings.log_level, settings.log_format, capture_output=settings.log_format == "json",
                   secrets=(settings.gemini_api_key, os.environ.get("POET_EVENTS_TOKEN", "")))
    from poet_grpc.api.interceptors._credentials import AuthConfigError
    from poet_grpc.sandbox import SandboxUnavailable
    from poet_grpc.api.server import InsecureRefused

    try:
        return asyncio.run(serve(settings))
    except (SandboxUnavailable, InsecureRefused) as exc:
        logs.console.error("cannot start: %s", exc)
        return 1
    except AuthConfigError as exc:
        logs.console.error("cannot start: %s", exc)
        return EXIT_USAGE
    except OSError as exc:
        logs.console.error("%s", exc)
        return EXIT_UNREACHABLE


def _gateway(args) -> int:
    from poet_grpc.api.gateway import EnvoyGateway, GatewayError

    settings = Settings.from_env(http_listen=args.http_listen)
    grpc_address = args.grpc or settings.grpc_listen

    async def run() -> int:
        gateway = EnvoyGateway(grpc_address, settings.http_listen,
                               cors_origins=parse_cors_origins(settings.cors_origins))
        try:
            await gateway.start()
        except GatewayError as exc:
            print(f"poet-grpc: gateway failed to start: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"poet-grpc: REST gateway on port {gateway.http_port} -> gRPC {grpc_address}", flush=True)
        try:
            await gateway.wait()
        finally:
            await gateway.stop()
        return EXIT_OK

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
