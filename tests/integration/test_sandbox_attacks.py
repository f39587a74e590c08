"""Attacks on the safety gate through the public API: a real server, Enhance with an
`original_code` whose module-level code is the attack (the gate imports the original,
so that code runs, in the sandbox). Whether the request is accepted or refused does
not matter; what each test checks is the attack's effect on the host, the server and
what comes back to the client.

The old gate imported the module with `python -I` in a subprocess as the server's
uid (root here), with the server's file system and network, a minimal environment,
RLIMIT_AS/RLIMIT_CPU, a wall-clock timeout and a process-group kill. Each docstring
says whether the test would fail against that design, and why.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb
from poet_grpc.sandbox import Limits

from sandbox_support import accepted, survivors, unique_sleep
from postgres_support import sqlite_only

NORMAL = '''
def total(a: int, b: int = 2) -> int:
    """Sum of a and b."""
    return a + b
'''


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def server_secret(monkeypatch) -> str:
    """A secret in the server's environment (the server runs in this process)."""
    secret = secrets.token_hex(16)
    monkeypatch.setenv("POET_TEST_SECRET", secret)
    return secret


@pytest.fixture
def gate_timeout() -> float | None:
    """The gate's time budget; parametrize a test on it to change it."""
    return None


@pytest.fixture
def settings(settings, server_secret, gate_timeout):
    """The shared test settings, taken after the secret is in the environment (so the
    server fixture, which needs settings, starts with it), with the gate's budget."""
    if gate_timeout is not None:
        settings = dataclasses.replace(settings, gate_timeout_seconds=gate_timeout)
    return settings


@pytest.fixture
def listener():
    """A TCP listener on the host's loopback; a connection lands in its backlog even
    if nobody accepts it, so after the call we count what arrived."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    yield sock
    sock.close()


# --- helpers ----------------------------------------------------------------------------


def module(attack: str) -> str:
    """A module whose top level runs `attack`, then defines f."""
    return textwrap.dedent(attack).strip() + "\n\n\ndef f(x):\n    return x\n"


async def enhance(stub, code: str) -> tuple[pb.EnhanceResponse | None, grpc.aio.AioRpcError | None, str]:
    """Send the attack: (response, error, everything the client got back as text)."""
    try:
        response = await stub.Enhance(pb.EnhanceRequest(function_name="f", original_code=code))
    except grpc.aio.AioRpcError as error:
        text = [error.details() or ""]
        for key, val in error.trailing_metadata() or ():
            text.append(f"{key}={val.decode('utf-8', 'replace') if isinstance(val, bytes) else val}")
        for key, val in error.initial_metadata() or ():
            text.append(f"{key}={val.decode('utf-8', 'replace') if isinstance(val, bytes) else val}")
        print("refused:", "\n".join(text))  # shown when a test fails
        return None, error, "\n".join(text)
    print("accepted:", response.version)
    return response, None, str(response)


async def assert_still_serving(stub) -> None:
    response = await stub.Enhance(pb.EnhanceRequest(function_name="total", original_code=NORMAL))
    assert response.version == "v1"
    domains = await stub.ListDomains(pb.ListDomainsRequest())
    assert domains.domains


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


# --- 1. files outside the sandbox -------------------------------------------------------


async def test_files_written_outside_the_sandbox_do_not_appear(stub, tmp_path):
    """The attack writes a marker file into /etc, root's home, the test's tmp_path,
    the host's /tmp and the server's working directory. None may exist afterwards.
    (Inside the sandbox /tmp is the task's own tmpfs: that write succeeds, into
    memory that vanishes with the task.) Old gate: running as root with the host's
    files, every write succeeded."""
    name = f"poet-attack-{secrets.token_hex(6)}"
    targets = [
        f"/etc/{name}",
        os.path.join(os.path.expanduser("~"), name),
        str(tmp_path / name),
        f"/tmp/{name}",
        str(Path.cwd() / name),
    ]
    code = module(f"""
        def _attack():
            outcome = []
            for path in {targets!r}:
                try:
                    with open(path, "w") as out:
                        out.write("escaped")
                    outcome.append("%s=WROTE" % path)
                except OSError as error:
                    outcome.append("%s=%s" % (path, type(error).__name__))
            raise RuntimeError("WRITES " + " ".join(outcome))
        _attack()
    """)
    try:
        _, error, text = await enhance(stub, code)
        assert [t for t in targets if os.path.lexists(t)] == []
        assert error is not None and "WRITES" in text  # the attack did run
        assert [t for t in targets if f"{t}=WROTE" in text] in ([], [f"/tmp/{name}"])
    finally:
        for target in targets:
            if os.path.lexists(target):
                os.unlink(target)


# --- 2. the server's secrets ------------------------------------------------------------


async def test_a_secret_in_the_servers_environment_never_comes_back(stub, server_secret):
    """The attack looks for POET_TEST_SECRET in its own environment, in
    /proc/<parent>/environ, /proc/1/environ and every /proc/*/environ and cmdline,
    and raises with whatever it found. The secret is in this (the server's)
    process's environment, and also in the initial environment of a helper process
    on the host: /proc/<pid>/environ shows a process's environment as it was
    started, so the helper stands for the server's own (and for processes the
    server starts, like Envoy). Old gate: as root it read every /proc/*/environ."""
    marker = unique_sleep()
    helper = subprocess.Popen(["sleep", marker], env={"POET_TEST_SECRET": server_secret, "PATH": "/usr/bin:/bin"})
    code = module("""
        import os

        def _attack():
            texts, errors = [b"\\0".join(b"%s=%s" % (k.encode(), v.encode()) for k, v in os.environ.items())], set()
            pids = [str(os.getppid()), "1", "self"]
            try:
                pids += os.listdir("/proc")
            except OSError as error:
                errors.add(type(error).__name__)
            for pid in pids:
                for name in ("environ", "cmdline"):
                    try:
                        with open("/proc/%s/%s" % (pid, name), "rb") as handle:
                            texts.append(handle.read())
                    except OSError as error:
                        errors.add(type(error).__name__)
            found = set()
            for text in texts:
                at = text.find(b"POET_TEST_SECRET=")
                if at >= 0:
                    found.add(text[at + 17:at + 17 + 64].split(b"\\0")[0].decode("ascii", "replace"))
            raise RuntimeError("FOUND[%s] %s" % (",".join(sorted(found)), sorted(errors)))
        _attack()
    """)
    try:
        deadline = time.monotonic() + 5  # its environ reads empty until it has exec'd
        while server_secret.encode() not in Path(f"/proc/{helper.pid}/environ").read_bytes():
            assert time.monotonic() < deadline, "the helper never showed the secret"
            time.sleep(0.01)
        _, error, text = await enhance(stub, code)
    finally:
        helper.kill()
        helper.wait()
    assert server_secret not in text
    assert error is not None and "FOUND[]" in text  # the attack ran and found nothing


# --- 3. the database --------------------------------------------------------------------


@sqlite_only
async def test_the_database_contents_never_come_back(stub, settings):
    """A function with a unique name is stored first; the attack reads the SQLite
    files (absolute path, with -wal and -shm) and raises with the bytes following
    the name's prefix. Old gate: as the server's uid it could read the database."""
    name = f"poet_db_marker_{secrets.token_hex(8)}"
    await stub.Enhance(pb.EnhanceRequest(function_name=name, original_code=NORMAL.replace("total", name)))
    db = os.path.abspath(settings.db)
    files = [db, db + "-wal", db + "-shm"]
    on_disk = b"".join(Path(p).read_bytes() for p in files if os.path.exists(p))
    assert name.encode() in on_disk  # there is something to steal
    code = module(f"""
        def _attack():
            found, errors = [], []
            for path in {files!r}:
                try:
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError as error:
                    errors.append(type(error).__name__)
                    continue
                at = data.find(b"poet_db_marker_")
                if at >= 0:
                    found.append(data[at:at + 40].decode("ascii", "replace"))
            raise RuntimeError("FOUND[%s] %s" % (",".join(found), errors))
        _attack()
    """)
    _, error, text = await enhance(stub, code)
    assert name not in text
    assert error is not None and "FOUND[]" in text


# --- 4 and 12. no network ---------------------------------------------------------------


async def test_no_connection_reaches_a_loopback_listener_or_the_servers_port(stub, server, listener):
    """The attack connects to a listener on the host's 127.0.0.1, to the server's own
    gRPC port and to an outside address. Nothing may arrive, and no connection may
    succeed (the sandbox has no network at all; Envoy's admin port or any other
    local service is as unreachable). Old gate: the host's network, so both local
    connections succeeded."""
    grpc_port = int(server.address.rpartition(":")[2])
    targets = [("127.0.0.1", listener.getsockname()[1]), ("127.0.0.1", grpc_port), ("localhost", grpc_port),
               ("1.1.1.1", 443)]
    code = module(f"""
        import socket

        def _attack():
            outcome = []
            for host, port in {targets!r}:
                try:
                    with socket.create_connection((host, port), timeout=1) as conn:
                        conn.sendall(b"hello")
                    outcome.append("CONNECTED:%d" % port)
                except OSError as error:
                    outcome.append("%s:%s" % (type(error).__name__, error.errno))
            raise RuntimeError("NET " + " ".join(outcome))
        _attack()
    """)
    _, error, text = await enhance(stub, code)
    assert accepted(listener) == 0
    assert error is not None and "NET " in text
    assert "CONNECTED" not in text


# --- 5. nothing survives ----------------------------------------------------------------


async def test_a_setsid_grandchild_does_not_survive_the_check(stub):
    """The attack forks; the child calls setsid() and forks again; the grandchild
    runs `sleep <unique>`, the module waits until it has exec'd. After the call no
    host process with that argv may be alive. Old gate: it killed the subprocess's
    process group only, and a new session is outside it: the grandchild lived on."""
    duration = unique_sleep()
    code = module(f"""
        import os

        def _attack():
            read_fd, write_fd = os.pipe()
            child = os.fork()
            if child == 0:
                try:
                    os.close(read_fd)
                    os.setsid()
                    if os.fork() == 0:
                        os.execv("/usr/bin/sleep", ["sleep", {duration!r}])
                finally:
                    os._exit(0)
            os.close(write_fd)
            os.waitpid(child, 0)
            os.read(read_fd, 1)  # end of file once the grandchild has exec'd
            raise RuntimeError("SPAWNED")
        _attack()
    """)
    _, error, text = await enhance(stub, code)
    assert error is not None and "SPAWNED" in text
    assert survivors(duration) == []


# --- 6. killing the server --------------------------------------------------------------


async def test_sigkill_to_the_parent_pid_1_and_everything_leaves_the_server_serving(stub):
    """The attack sends SIGKILL to its parent, to PID 1 and to -1 (every process it
    may signal). The server must serve the next calls. Old gate: the parent was the
    server itself (and, as root, kill(-1) reached every process on the host)."""
    code = module("""
        import os
        import signal

        def _attack():
            outcome = []
            for pid in (os.getppid(), 1, -1):
                try:
                    os.kill(pid, signal.SIGKILL)
                    outcome.append("sent")
                except OSError as error:
                    outcome.append(type(error).__name__)
            raise RuntimeError("KILL " + " ".join(outcome))
        _attack()
    """)
    await enhance(stub, code)
    await assert_still_serving(stub)


# --- 7. a fork loop ---------------------------------------------------------------------


async def test_a_fork_loop_is_contained(stub):
    """The attack forks up to 10,000 children (each runs `sleep <unique>`). The fork
    loop must stop at the sandbox's process limit, the call must return in bounded
    time, the server keep serving and no child survive on the host. Old gate: no
    process limit (and as root none would apply): all 10,000 forks ran."""
    duration = unique_sleep()
    code = module(f"""
        import os

        def _attack():
            count, stopped = 0, "none"
            try:
                for _ in range(10_000):
                    if os.fork() == 0:
                        try:
                            os.execv("/usr/bin/sleep", ["sleep", {duration!r}])
                        finally:
                            os._exit(1)
                    count += 1
            except OSError as error:
                stopped = type(error).__name__
            raise RuntimeError("FORKED %d %s" % (count, stopped))
        _attack()
    """)
    started = time.monotonic()
    _, error, text = await enhance(stub, code)
    assert time.monotonic() - started < 12
    assert error is not None and "FORKED " in text
    forked = int(text.split("FORKED ", 1)[1].split()[0])
    assert forked < Limits().processes, text
    assert survivors(duration) == []
    await assert_still_serving(stub)


# --- 8. memory --------------------------------------------------------------------------


async def test_a_memory_hog_is_refused_and_the_server_does_not_grow(stub):
    """The module allocates 8 GiB: it gets a MemoryError (the request is refused and
    says so) and the server's own memory does not grow. (The old gate had the same
    RLIMIT_AS: this one would pass there too.)"""
    rss, peak = memory_kib("VmRSS"), memory_kib("VmHWM")
    _, error, text = await enhance(stub, module("_hog = bytearray(8 << 30)"))
    assert error is not None
    assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    assert "MemoryError" in error.details()
    assert memory_kib("VmRSS") - rss < 512 * 1024
    assert memory_kib("VmHWM") - peak < 512 * 1024


# --- 9. disk ----------------------------------------------------------------------------


async def test_the_sandboxes_writable_space_is_bounded(stub):
    """The module writes 200 MB into its working directory and its temp directory
    (25 files of 8 MB: each below the file-size limit, so the space limit must stop
    it). It fails with ENOSPC/EFBIG, the request is refused, and the host's disk does
    not fill. Old gate: a temporary directory on the host's disk took all 200 MB."""
    free = shutil.disk_usage("/tmp").free, shutil.disk_usage(Path.cwd()).free
    code = module("""
        import os
        import tempfile

        def _fill():
            chunk = b"\\0" * (1 << 20)
            for n in range(25):
                folder = tempfile.gettempdir() if n % 2 else os.getcwd()
                with open(os.path.join(folder, "fill-%d" % n), "wb") as out:
                    for _ in range(8):
                        out.write(chunk)
                        out.flush()
        _fill()
    """)
    _, error, text = await enhance(stub, code)
    assert error is not None
    assert "No space left on device" in text or "File too large" in text, text
    after = shutil.disk_usage("/tmp").free, shutil.disk_usage(Path.cwd()).free
    assert free[0] - after[0] < 150 << 20 and free[1] - after[1] < 150 << 20


# --- 10. time ---------------------------------------------------------------------------


@pytest.mark.parametrize("gate_timeout", [2.0])
async def test_a_module_that_overruns_the_gates_budget_is_refused_in_time(stub, gate_timeout):
    """With a 2 s budget, a module sleeping 3 s at import is refused as not finished
    in time, well before it would have finished. (The old gate had a wall-clock
    timeout too: this one would pass there.)"""
    started = time.monotonic()
    _, error, text = await enhance(stub, module("import time\ntime.sleep(3)"))
    elapsed = time.monotonic() - started
    assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "did not finish" in error.details()
    assert elapsed < 4
    await assert_still_serving(stub)


# --- 11. what comes back is bounded -----------------------------------------------------


async def test_the_error_that_comes_back_is_short_and_names_the_exception(stub):
    """An exception with a 100 KB message: the client gets a description of a few
    hundred characters that names the exception's type. Old gate: the description
    carried the first 1000 characters of the message."""
    _, error, text = await enhance(stub, module('raise ValueError("A" * 100_000)'))
    assert error is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ValueError" in error.details()
    assert len(error.details()) <= 600
    assert len(text) <= 2000
