"""The server's side of the sandbox: a pool of warm, confined worker processes.

Each worker is a zygote (see _zygote) in namespaces of its own: it forks a fresh
child per task, so a task starts in well under a millisecond of process set-up,
sees nothing of the server, and leaves nothing behind. A worker serves one
request at a time; `run()` waits for a free one. A worker that dies or stops
answering is killed and replaced on next use; the request it had fails with
SandboxError (callers fail closed).
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ISOLATIONS = ("namespaces", "process")
"""namespaces: the full sandbox (the default; the server refuses to start without it
unless the operator chooses otherwise). process: a separate process with resource
limits, a clean environment and its own session, but the server's uid, files and
network: for hosts that refuse namespaces, at the operator's risk (see the README)."""

DEFAULT_UID = 2_000_000_000
"""When the server runs as root: the host uid of a worker's root; its tasks run as
the next uid (worker n uses DEFAULT_UID + 2n and + 2n + 1). Unused uids own nothing."""

WORKER_MEMORY_BYTES = 160 << 20
"""Allowance for a warm worker itself (the Python runtime, bandit, preloaded modules)
in its memory cgroup, on top of Limits.memory_bytes for the checks it runs."""

START_TIMEOUT_SECONDS = 30.0
BACKSTOP_SECONDS = 5.0
"""How much longer than a request's own time limit the server waits for a worker's
answer before it kills the worker (the worker enforces the limit itself)."""

_ZYGOTE = (Path(__file__).with_name("_zygote.py")).read_text(encoding="utf-8")
_FRAME = struct.Struct(">I")
_MAX_ANSWER = 16 * 1024 * 1024
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_FILES = ("/etc/ld.so.cache",)  # the dynamic loader's index of /usr's libraries
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxError(Exception):
    """A request could not be run in the sandbox (a worker died or stopped answering)."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot start with the chosen isolation on this host."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of every task (each process the task starts has them too)."""

    memory_bytes: int = 1 << 30
    """Address space (RLIMIT_AS) per process."""
    processes: int = 16
    """Processes and threads the task's uid may have (RLIMIT_NPROC): a fork loop stops there."""
    file_bytes: int = 16 << 20
    """Largest file a task may write (RLIMIT_FSIZE)."""
    open_files: int = 64
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    tmp_bytes: int = 16 << 20
    """Size of the task's private /tmp (namespaces mode)."""
    output_bytes: int = 1 << 20
    """Largest result a task may send back."""


@dataclass(frozen=True)
class TaskResult:
    ok: bool
    value: Any = None
    error: str = ""
    """For a failed task: the exception's type and a short text, or what stopped it."""
    timed_out: bool = False


def _system_binds() -> list[str]:
    """Directories the sandbox sees read-only: the system's libraries and the Python
    runtime this server runs (its prefix and, in a venv, the base installation)."""
    paths: list[str] = []
    for path in (*_SYSTEM_DIRS, sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        path = os.path.abspath(path)
        if os.path.lexists(path) and path not in paths:
            paths.append(path)
    # Children before parents would be hidden by the parent's mount: shortest first.
    return sorted(paths, key=len)


class _MemoryCgroup:
    """A memory cgroup holding one worker and everything it forks, so that the
    checks' processes together stay under a limit (RLIMIT_AS holds per process
    only). Made under the server's own cgroup when the host lets it (cgroup v1's
    memory controller, or v2 with memory delegated); otherwise None."""

    def __init__(self, path: Path, limit_file: str):
        self.path = path
        self._limit_file = limit_file

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> "_MemoryCgroup | None":
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            _, controllers, where = line.split(":", 2)
            if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
                parent, limit_file = Path("/sys/fs/cgroup" + where), "memory.max"
                try:
                    if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                        continue
                except OSError:
                    continue
            elif "memory" in controllers.split(","):
                parent, limit_file = Path("/sys/fs/cgroup/memory" + where), "memory.limit_in_bytes"
            else:
                continue
            for stale in parent.glob("poet-sandbox-*"):  # left by a server that was killed
                try:
                    # Refused while any process is in it; a young one may be another
                    # server's, made a moment ago and not yet given its worker.
                    if time.time() - stale.stat().st_mtime > 60:
                        stale.rmdir()
                except OSError:
                    pass
            group = cls(parent / name, limit_file)
            try:
                group.path.mkdir(exist_ok=True)
                (group.path / limit_file).write_text(str(limit_bytes))
            except OSError:
                group.remove()
                continue
            return group
        return None

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


class _Worker:
    def __init__(self, index: int, process: subprocess.Popen, stderr, cgroup: _MemoryCgroup | None = None):
        self.index = index
        self.process = process
        self.stderr = stderr
        self.cgroup = cgroup
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, value: Any) -> None:
        data = json.dumps(value).encode()
        try:
            self.process.stdin.write(_FRAME.pack(len(data)) + data)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise SandboxError(f"the sandbox worker is gone ({exc.__class__.__name__})") from None

    def receive(self, deadline: float) -> Any:
        fd = self.process.stdout.fileno()
        header = self._read(fd, _FRAME.size, deadline)
        (size,) = _FRAME.unpack(header)
        if size > _MAX_ANSWER:
            raise SandboxError("the sandbox worker sent an oversized answer")
        return json.loads(self._read(fd, size, deadline))

    def _read(self, fd: int, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SandboxError("the sandbox worker did not answer in time")
            chunk = os.read(fd, size)
            if not chunk:
                raise SandboxError(f"the sandbox worker exited: {self.stderr_tail() or 'no output'}")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def stderr_tail(self, limit: int = 600) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, self.stderr.tell() - limit))
            return self.stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        if self.cgroup is not None:
            self.cgroup.remove()


class Pending:
    """Tasks running in a sandbox worker; result() or cancel() ends them and frees the worker."""

    def __init__(self, sandbox: "Sandbox", worker: _Worker, count: int, deadline: float):
        self._sandbox = sandbox
        self._worker = worker
        self._count = count
        self._deadline = deadline
        self._done = False

    def result(self) -> list[TaskResult]:
        if self._done:
            raise RuntimeError("result() or cancel() was already called")
        self._done = True
        healthy = False
        try:
            answer = self._worker.receive(self._deadline)
            results = answer.get("results")
            if not isinstance(results, list) or len(results) != self._count:
                raise SandboxError(f"the sandbox worker failed: {str(answer.get('fatal', 'bad answer'))[:300]}")
            healthy = True
            return [
                TaskResult(ok=bool(r.get("ok")), value=r.get("value"), error=str(r.get("error", ""))[:1000],
                           timed_out=bool(r.get("timeout")))
                for r in results
            ]
        finally:
            self._sandbox._release(self._worker, healthy)

    def cancel(self) -> None:
        """Stop the tasks now (their processes are killed) and free the worker."""
        if self._done:
            return
        try:
            self._worker.send({"cancel": True})
        except SandboxError:
            pass
        try:
            self.result()
        except SandboxError:
            pass


class Sandbox:
    """A pool of `workers` sandbox workers running the given job modules.

    `jobs` are module sources (standard library plus what the Python runtime has
    installed) that define JOBS = {name: function(args) -> JSON value} and may
    define warm(), run once per worker before any task. `run()` is blocking and
    thread-safe: call it from worker threads.

    Each task runs in a fresh process forked from the warm worker. With
    `in_process`, for jobs that run only POET's own code (analysing untrusted text,
    never executing it), tasks run one after another in the worker itself, which
    is confined the same way and stays warm; a task that overruns its time is
    interrupted, and a worker that dies is replaced.
    """

    def __init__(
        self,
        jobs: Sequence[str],
        *,
        isolation: str = "namespaces",
        workers: int = 4,
        limits: Limits = Limits(),
        uid: int = DEFAULT_UID,
        timeout_seconds: float = 10.0,
        in_process: bool = False,
    ):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.isolation = isolation
        self.workers = workers
        self.limits = limits
        self.timeout_seconds = timeout_seconds
        """The wall-clock limit of a request when its caller names none."""
        self.in_process = in_process
        self._jobs = list(jobs)
        self._uid = uid
        self._lock = threading.Condition()
        self._idle: list[_Worker | int] = list(range(workers))  # an int: a worker not started yet
        self._busy: set[_Worker] = set()
        self._closed = False
        self._root = tempfile.mkdtemp(prefix="poet-sandbox-")
        os.chmod(self._root, 0o755)
        self.uid_in_sandbox: int | None = None
        self.memory_cgroup = False
        """Whether each worker's processes together are held under a memory cgroup."""

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> "Sandbox":
        """Start every worker now (in parallel); SandboxUnavailable when this host
        cannot give the chosen isolation, with the reason."""
        errors: list[BaseException] = []
        started: list[_Worker] = []

        def one(index: int) -> None:
            try:
                started.append(self._spawn(index))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        with self._lock:
            pending = [w for w in self._idle if isinstance(w, int)]
            self._idle = [w for w in self._idle if not isinstance(w, int)]
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in pending]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._lock:
            self._idle.extend(started)
            self._idle.extend(sorted(set(pending) - {w.index for w in started}))
            self._lock.notify_all()
        if errors:
            self.close()
            raise errors[0] if isinstance(errors[0], SandboxError) else SandboxUnavailable(str(errors[0]))
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = [w for w in self._idle if isinstance(w, _Worker)] + list(self._busy)
            self._idle = []
            self._lock.notify_all()
        for worker in workers:
            worker.kill()
        shutil.rmtree(self._root, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        """One line saying what isolation is in force, for startup output and logs."""
        memory = (f"memory cgroup of {self._cgroup_bytes() >> 20} MiB per worker" if self.memory_cgroup
                  else "memory limited per process only (no cgroup could be made)")
        if self.isolation == "namespaces":
            who = f"host uid {self._uid}+" if os.geteuid() == 0 else f"the server's uid {os.geteuid()} without capabilities"
            return (f"namespaces (user, pid, network, mount, ipc, uts; read-only runtime, private /tmp; tasks run as {who}); "
                    f"{memory}; {self.workers} warm workers")
        return ("process (WEAKER: resource limits and a clean environment only; code sees the server's files, "
                f"network and uid); {memory}; {self.workers} warm workers")

    # --- running ----------------------------------------------------------------------

    def run(self, tasks: Sequence[tuple[str, dict]], *, timeout_seconds: float | None = None) -> list[TaskResult]:
        """Run every (job, args) task at once, each in a fresh confined process; wait
        for all of them or timeout_seconds (default: the sandbox's). Raises SandboxError if the sandbox failed
        (not when a task fails: that is a TaskResult with ok False)."""
        return self.submit(tasks, timeout_seconds=timeout_seconds).result()

    def submit(self, tasks: Sequence[tuple[str, dict]], *, timeout_seconds: float | None = None) -> "Pending":
        """Like run(), but returns once the tasks are started: the caller may work
        meanwhile, then calls result() (or cancel()) exactly once."""
        timeout_seconds = timeout_seconds or self.timeout_seconds
        request = {
            "tasks": [{"job": job, "args": args} for job, args in tasks],
            "timeout": timeout_seconds,
            "limits": {**asdict(self.limits), "cpu_seconds": math.ceil(timeout_seconds) + 1},
        }
        worker = self._acquire()
        try:
            if isinstance(worker, int):
                worker = self._spawn(worker)
            try:
                worker.send(request)
            except SandboxError:  # it died while idle (the OOM killer, an operator): replace it once
                with self._lock:
                    self._busy.discard(worker)
                worker.kill()
                worker = self._spawn(worker.index)
                worker.send(request)
        except BaseException:
            self._release(worker, healthy=False)
            raise
        return Pending(self, worker, len(tasks), time.monotonic() + timeout_seconds + BACKSTOP_SECONDS)

    def _acquire(self) -> _Worker | int:
        with self._lock:
            while not self._idle:
                if self._closed:
                    raise SandboxError("the sandbox is closed")
                self._lock.wait()
            if self._closed:
                raise SandboxError("the sandbox is closed")
            worker = self._idle.pop(0)
            if isinstance(worker, _Worker):
                self._busy.add(worker)
            return worker

    def _release(self, worker: _Worker | int, healthy: bool) -> None:
        index = worker.index if isinstance(worker, _Worker) else worker
        if isinstance(worker, _Worker) and not healthy:
            worker.kill()
            worker = index
        with self._lock:
            if isinstance(worker, _Worker):
                self._busy.discard(worker)
            if self._closed:
                if isinstance(worker, _Worker):
                    worker.kill()
                return
            self._idle.append(worker)
            self._lock.notify()

    # --- starting a worker ---------------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        namespaces = self.isolation == "namespaces"
        binds = _system_binds()
        config = {
            "isolation": self.isolation,
            "root": self._root,
            "tmp": self._root,
            "binds": binds,
            # what a task's own /tmp would hide: attached again on top of it
            "tmp_binds": [b for b in binds if b.startswith("/tmp/") and not os.path.islink(b)],
            "devices": list(_DEVICES),
            "files": list(_FILES),
            "separate_uid": namespaces and os.geteuid() == 0,
            "in_process": self.in_process,
            "limits": asdict(self.limits),
        }
        stderr = tempfile.TemporaryFile()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _ZYGOTE, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=self._root,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        cgroup = _MemoryCgroup.create(f"{os.path.basename(self._root)}-{index}", self._cgroup_bytes())
        worker = _Worker(index, process, stderr, cgroup)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            if cgroup is not None:
                try:
                    cgroup.add(process.pid)  # before it forks anything: every process it makes is held too
                except OSError:  # the cgroup went away meanwhile: the per-process limits still hold
                    cgroup.remove()
                    cgroup = worker.cgroup = None
            if namespaces:
                try:
                    stage = worker.receive(deadline)
                except SandboxError:
                    raise SandboxUnavailable(
                        "this host refuses the Linux namespaces the sandbox needs "
                        f"({worker.stderr_tail(300) or 'the sandbox process exited'}). "
                        "Allow unprivileged user namespaces (see the README), or start with "
                        "--sandbox process to accept weaker isolation."
                    ) from None
                if stage.get("stage") != "unshared":
                    raise SandboxUnavailable(f"the sandbox did not start: {stage}")
                self._write_maps(process.pid, index)
                worker.send({"stage": "mapped"})
            worker.send({"jobs": self._jobs})
            ready = worker.receive(deadline)
            if not ready.get("ready"):
                raise SandboxUnavailable(f"the sandbox did not start: {str(ready.get('fatal', ready))[:300]}")
        except BaseException as exc:
            tail = worker.stderr_tail(300)
            worker.kill()
            if isinstance(exc, SandboxUnavailable):
                raise
            raise SandboxUnavailable(f"the sandbox did not start: {exc}{': ' + tail if tail else ''}") from None
        worker.pid = ready.get("pid")
        self.uid_in_sandbox = ready.get("uid")
        self.memory_cgroup = cgroup is not None
        return worker

    def _cgroup_bytes(self) -> int:
        """The worker's own warm memory, and on top of it what one check may use."""
        return WORKER_MEMORY_BYTES + self.limits.memory_bytes

    def _write_maps(self, pid: int, index: int) -> None:
        """The worker's uid/gid maps, written from outside (a process cannot map
        other uids for itself). As root: two unused host uids of its own; otherwise
        the server's own uid as the namespace's root."""
        try:
            if os.geteuid() == 0:
                base = self._uid + 2 * index
                for name in ("uid_map", "gid_map"):
                    Path(f"/proc/{pid}/{name}").write_text(f"0 {base} 2\n")
            else:
                Path(f"/proc/{pid}/setgroups").write_text("deny\n")
                Path(f"/proc/{pid}/uid_map").write_text(f"0 {os.geteuid()} 1\n")
                Path(f"/proc/{pid}/gid_map").write_text(f"0 {os.getegid()} 1\n")
        except OSError as exc:
            raise SandboxUnavailable(f"cannot map the sandbox's user namespace: {exc}") from None
