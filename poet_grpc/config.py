"""Service settings: one frozen object, built from POET_* environment variables
and command-line flags (flags win), passed explicitly to whatever needs it."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Settings:
    grpc_listen: str = "127.0.0.1:50051"
    """host:port the gRPC server binds (POET_GRPC_LISTEN). Port 0 picks a free port."""

    http_listen: str = "127.0.0.1:8080"
    """host:port of the Envoy REST gateway (POET_HTTP_LISTEN)."""

    gateway: bool = True
    """Run the Envoy REST gateway next to the gRPC server (POET_GATEWAY)."""

    db: Path | str = Path("poet.db")
    """Where the event log and its projections live (POET_DB): a SQLite file (the
    embedded default), or a postgresql:// (or postgres://) URL of a PostgreSQL database
    that several replicas may share."""

    sqlite_synchronous: str = "FULL"
    """SQLite synchronous mode: FULL fsyncs every commit before it is acknowledged;
    NORMAL is faster but may lose the last commits on power loss (POET_SQLITE_SYNCHRONOUS)."""

    retention_days: float = 30.0
    """Events appended more than this many days ago (by the server's clock, whatever
    timestamp they carry) are deleted from the start of the log by a background job;
    0 keeps them forever (POET_RETENTION_DAYS). Also the dedup window. Resuming from a
    deleted position is OUT_OF_RANGE; projections keep what was derived."""

    retention_check_seconds: float = 60.0
    """How often the retention job runs (POET_RETENTION_CHECK_SECONDS)."""

    environment: str = "dev"
    """Environment stamped into event metadata: dev, staging, production (POET_ENVIRONMENT)."""

    max_code_bytes: int = 512 * 1024
    """Largest function source accepted, in bytes of UTF-8 (POET_MAX_CODE_BYTES)."""

    max_parameters: int = 255
    """Most parameters the enhanced function may have; each adds checks to the generated
    code, so more is INVALID_ARGUMENT (POET_MAX_PARAMETERS)."""

    max_generated_bytes: int = 1024 * 1024
    """Largest enhanced module (the original plus the POET section), in bytes of UTF-8;
    a request whose enhancement would be larger is INVALID_ARGUMENT (POET_MAX_GENERATED_BYTES)."""

    max_event_bytes: int = 256 * 1024
    """Largest published event, serialized, in bytes (POET_MAX_EVENT_BYTES)."""

    max_publish_batch: int = 1000
    """Most events one PublishEvents call may carry (POET_MAX_PUBLISH_BATCH)."""

    max_message_bytes: int = 8 * 1024 * 1024
    """gRPC transport limit for one request message (POET_MAX_MESSAGE_BYTES)."""

    checkpoint_seconds: float = 10.0
    """How often an idle event stream receives a checkpoint (POET_CHECKPOINT_SECONDS)."""

    shutdown_grace_seconds: float = 10.0
    """How long a stopping server lets in-flight calls finish (POET_SHUTDOWN_GRACE_SECONDS)."""

    shutdown_drain_seconds: float = 5.0
    """On SIGTERM, how long the server keeps serving with readiness not_ready (HTTP 503)
    before it stops taking calls, so load balancers can take it out first
    (POET_SHUTDOWN_DRAIN_SECONDS). 5 s covers the readiness probe's detection time in
    deploy/ (every 2 s, 2 failures, 1 s timeout); 0 stops at once."""

    readiness_max_rss_bytes: int = 2 * 1024**3
    """Resident memory above which /health/ready reports memory false; 0 turns the
    check off (POET_READINESS_MAX_RSS_BYTES)."""

    rate_limit_per_second: float = 0.0
    """Requests per second each client may sustain (key: x-client-id header, else
    its address); over it calls fail RESOURCE_EXHAUSTED / HTTP 429. 0 turns
    rate limiting off (POET_RATE_LIMIT_PER_SECOND)."""

    rate_limit_burst: int = 20
    """Requests a client may send at once before its rate applies (POET_RATE_LIMIT_BURST)."""

    quota_functions: int = 1000
    """Functions one caller may create; past it Enhance fails RESOURCE_EXHAUSTED / HTTP 429
    with QuotaFailure. 0: unlimited (POET_QUOTA_FUNCTIONS)."""

    quota_versions_per_function: int = 100
    """Versions of one function one caller may store (the learning loop's regenerations
    count apart, against the same limit). 0: unlimited (POET_QUOTA_VERSIONS_PER_FUNCTION)."""

    quota_bytes: int = 256 * 1024 * 1024
    """Bytes of code (source plus generated) one caller may store. 0: unlimited (POET_QUOTA_BYTES)."""

    generator_workers: int = 4
    """Enhancements generated at once; more wait their turn (POET_GENERATOR_WORKERS)."""

    gate_timeout_seconds: float = 10.0
    """Wall-clock limit of the gate's sandboxed checks of one version (importing the
    original and the generated module, bandit's scan); a check that overruns it is
    killed and the version refused (POET_GATE_TIMEOUT_SECONDS)."""

    sandbox: str = "namespaces"
    """Where submitted and generated code runs (POET_SANDBOX): "namespaces", the
    sandbox (own user, PID, network and mount namespaces; the server refuses to
    start where the host does not allow them), or "process", a weaker mode for such
    hosts: a separate process with resource limits only, which sees the server's
    files and network (see the README)."""

    auth_file: str = ""
    """JSON file of API keys and JWT settings (POET_AUTH_FILE, see the README); empty
    for none, which is allowed only on loopback addresses unless ``insecure``. A bad
    file stops the server at startup."""

    insecure: bool = False
    """Serve without authentication on a non-loopback address (POET_INSECURE)."""

    audit_log: str = ""
    """Where the audit log goes: a file appended to, or "-" for stderr; empty for
    none (POET_AUDIT_LOG)."""

    tls_cert: str = ""
    """PEM certificate chain for TLS on the gRPC port and the REST listener (POET_TLS_CERT)."""

    tls_key: str = ""
    """PEM private key of tls_cert (POET_TLS_KEY)."""

    tls_client_ca: str = ""
    """PEM CA bundle: when set, clients must present a certificate it signed (mTLS) (POET_TLS_CLIENT_CA)."""

    cors_origins: str = ""
    """Comma-separated origins (scheme://host[:port], exact: no path, no "*") whose
    browser pages may call the REST API; empty for none, and then the gateway sends
    no CORS headers (POET_CORS_ORIGINS). See the README's CORS section."""

    sinks_file: str = ""
    """JSON file listing the outbound sinks (webhook, pagerduty, slack, mlflow); empty
    for none. A bad file stops the server at startup (POET_SINKS_FILE)."""

    log_level: str = "INFO"
    """Log level of the server's own loggers, optionally followed by logger=LEVEL pairs
    for others: "DEBUG,httpx=DEBUG" (POET_LOG_LEVEL). Other libraries log at INFO or
    above, the chatty ones at WARNING, unless named."""

    log_format: str = "text"
    """How the server logs (POET_LOG_FORMAT): "text" for people, or "json", one JSON
    object per line (time, level, logger, message, request and trace ids) for a log
    collector; then everything the process writes, its startup lines and Envoy's
    output included, is such a line."""

    gemini_api_key: str = ""
    """Gemini API key; when set, Gemini writes enhancements and the template is the
    fallback (POET_GEMINI_API_KEY)."""

    gemini_model: str = "gemini-2.5-flash"
    """Gemini model name (POET_GEMINI_MODEL)."""

    gemini_base_url: str = ""
    """Gemini API endpoint; empty for Google's (POET_GEMINI_BASE_URL)."""

    gemini_timeout_seconds: float = 30.0
    """Time limit of one Gemini request (POET_GEMINI_TIMEOUT_SECONDS)."""

    policy_min_executions: int = 20
    """Executions before error/success rates or durations can trigger a new version (POET_POLICY_MIN_EXECUTIONS)."""

    policy_max_error_rate: float = 0.1
    """Error rate above which a new version is generated (POET_POLICY_MAX_ERROR_RATE)."""

    policy_min_success_rate: float = 0.9
    """Success rate below which a new version is generated (POET_POLICY_MIN_SUCCESS_RATE)."""

    policy_min_avg_rating: float = 2.5
    """Average rating (1-5) below which a new version is generated (POET_POLICY_MIN_AVG_RATING)."""

    policy_min_ratings: int = 3
    """Ratings before the average rating counts (POET_POLICY_MIN_RATINGS)."""

    policy_duration_regression: float = 0.5
    """Slowdown against the parent version (0.5 = 50 %) that triggers a new version (POET_POLICY_DURATION_REGRESSION)."""

    policy_max_false_positive_rate: float = 0.3
    """ml_monitoring: false-positive rate of drift detections that triggers a new version (POET_POLICY_MAX_FALSE_POSITIVE_RATE)."""

    policy_max_missed_drift_rate: float = 0.1
    """ml_monitoring: missed-drift rate that triggers a new version (POET_POLICY_MAX_MISSED_DRIFT_RATE)."""

    policy_min_validations: int = 5
    """ml_monitoring: drift verdicts before the drift rates count (POET_POLICY_MIN_VALIDATIONS)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from POET_<FIELD> variables, then keyword overrides (None means: not given)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"POET_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def validated(self) -> "Settings":
        """Self, or ValueError naming the setting that is out of range."""
        for name in ("grpc_listen", "http_listen"):
            split_address(getattr(self, name), setting=name)
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.sandbox not in ("namespaces", "process"):
            raise ValueError(f"sandbox must be namespaces or process, not {self.sandbox!r}")
        if self.sqlite_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"sqlite_synchronous must be FULL, NORMAL or EXTRA, not {self.sqlite_synchronous!r}")
        for name in ("max_code_bytes", "max_event_bytes", "max_publish_batch", "max_message_bytes", "generator_workers",
                     "max_parameters", "max_generated_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("checkpoint_seconds", "gate_timeout_seconds", "gemini_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("policy_max_error_rate", "policy_min_success_rate", "policy_max_false_positive_rate",
                     "policy_max_missed_drift_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.policy_duration_regression <= 0:
            raise ValueError("policy_duration_regression must be positive")
        for name in ("policy_min_executions", "policy_min_ratings", "policy_min_validations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.shutdown_grace_seconds < 0:
            raise ValueError("shutdown_grace_seconds must not be negative")
        for name in ("shutdown_drain_seconds", "readiness_max_rss_bytes", "rate_limit_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.retention_days < 0:
            raise ValueError("retention_days must not be negative")
        if self.retention_check_seconds <= 0:
            raise ValueError("retention_check_seconds must be positive")
        if self.rate_limit_burst < 1:
            raise ValueError("rate_limit_burst must be at least 1")
        for name in ("quota_functions", "quota_versions_per_function", "quota_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 is unlimited)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both (POET_TLS_CERT, POET_TLS_KEY) or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key: mTLS is TLS with client certificates")
        parse_cors_origins(self.cors_origins)
        db = str(self.db) if is_postgres_url(self.db) else Path(self.db)
        return dataclasses.replace(self, db=db, sqlite_synchronous=self.sqlite_synchronous.upper())

    def exposed_without_auth(self) -> list[str]:
        """The listen addresses (settings names) reachable beyond this host while no auth file is set."""
        if self.auth_file:
            return []
        names = ["grpc_listen"] + (["http_listen"] if self.gateway else [])
        return [name for name in names if not is_loopback(split_address(getattr(self, name), setting=name)[0])]


def is_postgres_url(db: str | os.PathLike) -> bool:
    """True when the db setting names a PostgreSQL database rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def redacted_db(db: str | os.PathLike) -> str:
    """The db setting as it may be shown: a URL's password masked."""
    if not is_postgres_url(db):
        return str(db)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", db)


def learning_policy(settings: Settings):
    """The core's LearningPolicy from the POET_POLICY_* settings."""
    from poet_grpc.core.learning import LearningPolicy

    return LearningPolicy(
        min_executions=settings.policy_min_executions,
        max_error_rate=settings.policy_max_error_rate,
        min_success_rate=settings.policy_min_success_rate,
        min_ratings=settings.policy_min_ratings,
        min_avg_rating=settings.policy_min_avg_rating,
        duration_regression=settings.policy_duration_regression,
        min_validations=settings.policy_min_validations,
        max_false_positive_rate=settings.policy_max_false_positive_rate,
        max_missed_drift_rate=settings.policy_max_missed_drift_rate,
    )


def generator_limits(settings: Settings):
    """The generator's Limits from POET_MAX_PARAMETERS and POET_MAX_GENERATED_BYTES."""
    from poet_grpc.generator import Limits

    return Limits(max_parameters=settings.max_parameters, max_generated_bytes=settings.max_generated_bytes)


def quotas(settings: Settings):
    """The core's Quotas from the POET_QUOTA_* settings."""
    from poet_grpc.core.quotas import Quotas

    return Quotas(
        functions=settings.quota_functions,
        versions_per_function=settings.quota_versions_per_function,
        bytes=settings.quota_bytes,
    )


_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)"
                     r"(:(?P<port>[0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_cors_origins(value: str) -> tuple[str, ...]:
    """The origins of a POET_CORS_ORIGINS list, as browsers write them in the Origin
    header (lowercase, no default port); ValueError for anything else: a path, a
    "*", "null" (sandboxed pages and files: anyone can be that origin), user info."""
    origins: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        match = _ORIGIN.fullmatch(item.lower())
        port = match["port"] if match else None
        if match is None or (port is not None and not 0 < int(port) < 65536):
            raise ValueError(f"cors_origins: {item!r} is not an origin such as https://app.example.com or "
                             "http://localhost:3000 (scheme://host[:port], no path, no '*')")
        origin = f"{match['scheme']}://{match['host']}"
        if port is not None and int(port) != _DEFAULT_PORTS.get(match["scheme"]):
            origin += f":{int(port)}"
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for any other address or name."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str, *, setting: str = "address") -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{setting} must be host:port (e.g. 127.0.0.1:50051), not {address!r}")
    return host.strip("[]"), int(port)


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kinds = {"int": int, "float": float, "bool": bool, "str": str, "Path": Path, "Path | str": str}
    kind = f.type if isinstance(f.type, type) else kinds[f.type]
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"POET_{f.name.upper()} must be true or false, not {raw!r}")
        return lowered in ("1", "true", "yes", "on")
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"POET_{f.name.upper()} must be {kind.__name__}, not {raw!r}") from None
