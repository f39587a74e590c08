"""A generator worker process (see _processes): `python -m poet_grpc.generator._worker`.

Reads calls from stdin and writes messages to stdout, one call after another, each
a pickle after its length (_processes.HEADER). A call is (name, args, kwargs) of
one of CALLS. During a prepare() call comes ("started", SandboxChecks), as soon as
the sandbox can start (see prepare's `started`); every call ends with
("done", ok, value or exception, retire). retire: this process exits after the call
(it grew past RETIRE_RSS_BYTES), so the server starts another rather than keep the
memory a large request left behind.
"""

from __future__ import annotations

import os
import pickle
import sys

from poet_grpc.generator._analysis import analyze, first_function_name
from poet_grpc.generator._errors import GateError
from poet_grpc.generator._generate import prepare
from poet_grpc.generator._processes import HEADER, read_exactly

CALLS = {"prepare": prepare, "analyze": analyze, "first_function_name": first_function_name}
RETIRE_RSS_BYTES = 256 * 1024 * 1024
NICE = 10


def _send(stream, message: tuple) -> None:
    data = pickle.dumps(message)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def main() -> None:
    # Below the server's priority: on a busy host its event loop gets the CPU first.
    os.nice(NICE)
    calls, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    while True:
        try:
            (size,) = HEADER.unpack(read_exactly(calls, HEADER.size))
            name, args, kwargs = pickle.loads(read_exactly(calls, size))
        except EOFError:
            return  # the server closed the pipe: it is done with this worker
        try:
            if name == "prepare":
                kwargs["started"] = lambda checks: _send(answers, ("started", checks))
            ok, value = True, CALLS[name](*args, **kwargs)
        except Exception as exc:
            ok, value = False, exc
        retire = _rss_bytes() > RETIRE_RSS_BYTES
        try:
            _send(answers, ("done", ok, value, retire))
        except Exception as exc:  # an exception that does not pickle: say what it was
            _send(answers, ("done", False, GateError("sandbox", f"{type(value).__name__}: {exc}"[:200]), retire))
        if retire:
            return


if __name__ == "__main__":
    main()
