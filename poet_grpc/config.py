"""Service settings: one frozen object, built from POET_* environment variables
and command-line flags (flags win), passed explicitly to whatever needs it."""

from __future__ import annotations

import dataclasses
import os
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

    db: Path = Path("poet.db")
    """SQLite file holding the event log and its projections (POET_DB)."""

    sqlite_synchronous: str = "FULL"
    """SQLite synchronous mode: FULL fsyncs every commit before it is acknowledged;
    NORMAL is faster but may lose the last commits on power loss (POET_SQLITE_SYNCHRONOUS)."""

    environment: str = "dev"
    """Environment stamped into event metadata: dev, staging, production (POET_ENVIRONMENT)."""

    max_code_bytes: int = 512 * 1024
    """Largest function source accepted, in bytes of UTF-8 (POET_MAX_CODE_BYTES)."""

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

    generator_workers: int = 4
    """Enhancements generated at once; more wait their turn (POET_GENERATOR_WORKERS)."""

    gate_timeout_seconds: float = 10.0
    """Time limit for importing generated code in the isolated check (POET_GATE_TIMEOUT_SECONDS)."""

    log_level: str = "INFO"
    """Python log level of the server (POET_LOG_LEVEL)."""

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
        if self.sqlite_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"sqlite_synchronous must be FULL, NORMAL or EXTRA, not {self.sqlite_synchronous!r}")
        for name in ("max_code_bytes", "max_event_bytes", "max_publish_batch", "max_message_bytes", "generator_workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("checkpoint_seconds", "gate_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.shutdown_grace_seconds < 0:
            raise ValueError("shutdown_grace_seconds must not be negative")
        return dataclasses.replace(self, db=Path(self.db), sqlite_synchronous=self.sqlite_synchronous.upper())


def split_address(address: str, *, setting: str = "address") -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{setting} must be host:port (e.g. 127.0.0.1:50051), not {address!r}")
    return host.strip("[]"), int(port)


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str, "Path": Path}[f.type]
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"POET_{f.name.upper()} must be true or false, not {raw!r}")
        return lowered in ("1", "true", "yes", "on")
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"POET_{f.name.upper()} must be {kind.__name__}, not {raw!r}") from None
