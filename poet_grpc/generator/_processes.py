"""Worker processes for generate()'s CPU-bound half, so it never holds the server's GIL.

Analysis, rendering and the gate's static checks of a heavy request take seconds
of pure Python and long stretches of C (ast.parse of 512 KB holds the GIL for about
0.2 s). On a thread of the server they hold the GIL its event loop needs: unrelated
calls waited seconds behind four such callers. GeneratorProcesses runs prepare()
(and analyze(), first_function_name()) in worker processes instead (see _worker); the sandbox
checks and the LLM stay in the server, whose thread only waits.

The workers are plain `python -m poet_grpc.generator._worker` processes: nothing of
the server (threads, sockets, locks, its __main__) is inherited or re-run. They are
shared by every user of the same size in this process (as the gate's sandbox is:
tests open many servers), started on demand, replaced when one dies, overruns
TIMEOUT_SECONDS or retires after a large request (see _worker).

Submitted code is only parsed there, never run: that is the sandbox's business.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from poet_grpc.core.models import EnhancementSpec
from poet_grpc.generator._analysis import FunctionInfo
from poet_grpc.generator._errors import GateError
from poet_grpc.generator._gate import SandboxChecks
from poet_grpc.generator._generate import DEFAULT_LIMITS, Limits, Prepared
from poet_grpc.observability import tracing

TIMEOUT_SECONDS = 120.0
"""Longest one call may take (a bounded request takes a few seconds); then the worker is killed."""

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The directory holding this poet_grpc: the workers import the same one."""

HEADER = struct.Struct("!Q")
"""Each call and answer on a worker's pipes: a pickle after its length in these 8 bytes."""


def read_exactly(stream, size: int) -> bytes:
    """size bytes from stream; EOFError when it ends first."""
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class _WorkerDied(Exception):
    pass


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self):
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, path]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poet_grpc.generator._worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self.retired = False
        self.timed_out = False

    def call(self, name: str, args: tuple, kwargs: dict, started: Callable[[Any], None] | None) -> Any:
        """The call's result (or its exception, raised); `started` gets prepare()'s early message."""
        data = pickle.dumps((name, args, kwargs))
        timer = threading.Timer(TIMEOUT_SECONDS, self._overran)
        timer.daemon = True
        timer.start()
        failed: BaseException | None = None
        try:
            self.process.stdin.write(HEADER.pack(len(data)) + data)
            self.process.stdin.flush()
            while True:
                (size,) = HEADER.unpack(read_exactly(self.process.stdout, HEADER.size))
                message = pickle.loads(read_exactly(self.process.stdout, size))
                if message[0] == "done":
                    break
                try:
                    if started is not None and failed is None:
                        started(message[1])
                except Exception as exc:  # read the call to its end all the same: the worker stays usable
                    failed = exc
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, IndexError):
            raise _WorkerDied from None
        finally:
            timer.cancel()
        _, ok, value, self.retired = message
        if failed is not None:
            raise failed
        if not ok:
            raise value
        return value

    def _overran(self) -> None:
        self.timed_out = True
        self.kill()

    @property
    def alive(self) -> bool:
        return not self.retired and self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.kill()
        self.process.wait()


class GeneratorProcesses:
    """At most `workers` worker processes running prepare(); blocking calls, for
    worker threads (one process per call at a time, more callers wait)."""

    def __init__(self, workers: int = 4):
        self.workers = workers
        self._idle: list[_Worker] = []
        self._running = 0
        self._closed = False
        self._changed = threading.Condition()

    def prepare(
        self,
        spec: EnhancementSpec,
        *,
        version: str = "",
        limits: Limits = DEFAULT_LIMITS,
        started: Callable[[SandboxChecks], None] | None = None,
    ) -> Prepared:
        """prepare() in a worker process; its AnalysisError and GateError come back as
        raised, and `started` is called here, in the caller's thread."""
        # This side of the worker's work. Not the current span: the gate, which
        # `started` begins meanwhile, is its sibling, not its child.
        span = tracing.start_span("poet.prepare")
        try:
            return self._run("prepare", (spec,), {"version": version, "limits": limits}, started)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end()

    def analyze(self, source: str, function_name: str, *, max_parameters: int | None = None) -> FunctionInfo:
        return self._run("analyze", (source, function_name), {"max_parameters": max_parameters})

    def first_function_name(self, source: str) -> str:
        return self._run("first_function_name", (source,), {})

    def warm(self) -> None:
        """Start the workers now rather than on the first requests (does not wait for them)."""
        with self._changed:
            while not self._closed and self._running + len(self._idle) < self.workers:
                self._idle.append(_Worker())

    def close(self) -> None:
        with self._changed:
            self._closed = True
            idle, self._idle = self._idle, []
            self._changed.notify_all()
        for worker in idle:
            worker.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _run(self, name: str, args: tuple, kwargs: dict, started: Callable[[Any], None] | None = None) -> Any:
        worker = self._acquire()
        try:
            result = worker.call(name, args, kwargs, started)
        except _WorkerDied:
            self._release(worker, broken=True)
            if worker.timed_out:
                raise GateError("sandbox", f"generation did not finish within {TIMEOUT_SECONDS:g} s") from None
            raise GateError("sandbox", "the generator's worker process ended unexpectedly") from None
        except BaseException as exc:
            # The call's own error (AnalysisError...): the worker answered and is fine.
            self._release(worker, broken=not isinstance(exc, Exception))
            raise
        self._release(worker)
        return result

    def _acquire(self) -> _Worker:
        with self._changed:
            while True:
                if self._closed:
                    raise GateError("sandbox", "the generator's worker processes are closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive:
                        self._running += 1
                        return worker
                    worker.close()
                if self._running < self.workers:
                    self._running += 1
                    break
                self._changed.wait()
        try:
            return _Worker()
        except BaseException:
            with self._changed:
                self._running -= 1
                self._changed.notify()
            raise

    def _release(self, worker: _Worker, *, broken: bool = False) -> None:
        with self._changed:
            self._running -= 1
            keep = not (broken or self._closed) and worker.alive
            if keep:
                self._idle.append(worker)
            self._changed.notify()
        if not keep:
            worker.close()


_shared: dict[int, GeneratorProcesses] = {}
_shared_lock = threading.Lock()


def generator_processes(workers: int = 4) -> GeneratorProcesses:
    """The GeneratorProcesses of that size shared in this process."""
    with _shared_lock:
        processes = _shared.get(workers)
        if processes is None or processes.closed:
            processes = _shared[workers] = GeneratorProcesses(workers)
        return processes


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        for processes in _shared.values():
            processes.close()
        _shared.clear()
