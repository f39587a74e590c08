"""Shared by the benchmarks: percentiles and a `poet-grpc serve` process to measure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


FUNCTION = '''
def score_{n}(values: list, weight: float = 1.0) -> float:
    """Weighted mean of values ({n})."""
    if not values:
        return 0.0
    return weight * sum(values) / len(values)
'''
"""A small function to enhance; .format(n=...) makes each one new."""


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..1."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`poet-grpc serve` in its own process on a fresh SQLite file in workdir, so the
    benchmark client and the server do not share an event loop or a GIL."""

    def __init__(self, workdir: Path, *, gateway: bool = False, env: dict[str, str] | None = None,
                 cwd: Path | None = None, db: str | None = None):
        """env: extra environment variables for the server (e.g. POET_* settings);
        cwd: its working directory (`python -m` imports from there first);
        db: what --db gets (e.g. a postgresql:// URL) instead of workdir/bench.db."""
        self.address = f"127.0.0.1:{free_port()}"
        self.http_port = free_port() if gateway else None
        db = db or str(workdir / "bench.db")
        command = [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", self.address, "--db", db]
        command += ["--http-listen", f"127.0.0.1:{self.http_port}"] if gateway else ["--no-gateway"]
        env = {**os.environ, "POET_LOG_LEVEL": "WARNING", "POET_SHUTDOWN_GRACE_SECONDS": "2", "POET_SHUTDOWN_DRAIN_SECONDS": "0", **(env or {})}
        self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        ready = "REST gateway listening" if gateway else "gRPC listening"
        self.startup_lines: list[str] = []
        """What the server printed up to and including its ready line."""
        for line in self.process.stdout:
            self.startup_lines.append(line.rstrip("\n"))
            if ready in line:
                return
        raise SystemExit("poet-grpc serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
