"""Where submitted and generated code runs: nowhere else.

A Sandbox is a pool of warm worker processes, each confined in Linux namespaces
of its own (user, PID, network, mount, IPC, UTS): no network at all, a root file
system holding only the Python runtime (read-only) and a private, size-limited
/tmp, an unprivileged uid without capabilities, and resource limits on memory,
CPU time, processes, file size and output. Each task runs in a fresh process
forked from the warm worker, and everything it starts is killed when it ends.
See _zygote for the confinement and _pool for the server's side.
"""

from poet_grpc.sandbox._pool import (
    DEFAULT_UID,
    ISOLATIONS,
    Limits,
    Pending,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    TaskResult,
)

__all__ = [
    "DEFAULT_UID",
    "ISOLATIONS",
    "Limits",
    "Pending",
    "Sandbox",
    "SandboxError",
    "SandboxUnavailable",
    "TaskResult",
]
