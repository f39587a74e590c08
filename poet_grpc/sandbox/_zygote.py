"""The sandbox's side: builds the confinement, then forks a fresh child per task.

Runs as `python -I -B -c <this file's text> <config>` in a process of its own,
started by _pool.Sandbox. Standard library only, and nothing of poet_grpc is
imported: the sandbox cannot see the project's files.

Protocol on stdin/stdout: frames of a 4-byte big-endian length and UTF-8 JSON.

1. namespaces mode: this process unshares user, mount, network, IPC, UTS and PID
   namespaces, sends {"stage": "unshared"} and waits for {"stage": "mapped"}
   (the server, outside, has written its uid/gid maps); it becomes root of its
   user namespace (an unprivileged uid on the host), builds a new root file
   system (the Python runtime and a few devices, read-only; nothing else) and
   forks the zygote, PID 1 of the new PID namespace.
2. The zygote reads {"jobs": [source, ...]}: each source is executed as a module
   that defines JOBS = {name: function(args) -> JSON value} and optionally
   warm(), run once here so that every task starts warm. It answers
   {"ready": true, ...}.
3. Then, one request at a time: {"tasks": [{"job", "args"}...], "timeout",
   "limits"} -> {"results": [{"ok": true, "value"} | {"ok": false, "error"}]}.
   While it runs, {"cancel": true} stops it early (its unfinished tasks fail).
   Every task runs in its own forked child, all of a request's tasks at once; the
   child gets a private, size-limited /tmp, drops every privilege (another uid
   where the host allows it, no capabilities, no new privileges), sets its
   resource limits, and only then runs the job. When the request ends (all done,
   or the time is up) every process the tasks left behind is killed: PID 1 kills
   the whole PID namespace but itself.

The zygote exits when its stdin closes (the server went away); being PID 1, its
exit kills whatever is left in the namespace.
"""

import ctypes
import json
import os
import resource
import select
import signal
import struct
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 4
SYS_OPEN_TREE = 428  # the same number on every architecture (new syscalls are)
SYS_MOVE_MOUNT = 429

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22

MAX_FRAME = 64 * 1024 * 1024
ERROR_TEXT = 300
"""Longest error text a task's failure carries back."""

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, "%s: %s" % (what, os.strerror(number)))


def _mount(source, target, fstype, flags, data=None):
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        "mount %s" % target,
    )


def _read_exact(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    (size,) = struct.unpack(">I", _read_exact(fd, 4))
    if size > MAX_FRAME:
        raise ValueError("frame too large")
    return json.loads(_read_exact(fd, size))


def write_frame(fd, value):
    data = json.dumps(value).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


# --- building the confinement (namespaces mode) ------------------------------------

def _statvfs_flags(path):
    """The mount flags a bind mount of path must keep (a user namespace may not drop them)."""
    flags = os.statvfs(path).f_flag
    kept = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME)):
        if flags & st:
            kept |= ms
    return kept


def _open_sources(binds, devices, files):
    """O_PATH descriptors of what the root will show, opened while this process
    still has the host uid that may traverse to them (the Python runtime can live
    under a home directory that the sandbox's own uid cannot enter)."""
    sources = {}
    for path in list(binds) + list(devices) + list(files):
        if os.path.islink(path) and path in binds:
            sources[path] = ("link", os.readlink(path))
        else:
            try:
                sources[path] = ("fd", os.open(path, os.O_PATH | os.O_CLOEXEC))
            except OSError:
                continue
    return sources


def _build_root(root, sources, files):
    """A tmpfs at root holding read-only binds of each source at its own path (a
    symlink is recreated as the symlink); then it becomes the root."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("poet-sandbox", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path, (kind, source) in sources.items():
        inside = root + path
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        if kind == "link":
            if not os.path.lexists(inside):
                os.symlink(source, inside)
            continue
        if os.path.isdir("/proc/self/fd/%d" % source):
            os.makedirs(inside, exist_ok=True)
        else:
            with open(inside, "w"):
                pass
        _mount("/proc/self/fd/%d" % source, inside, None, MS_BIND)
        os.close(source)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | _statvfs_flags(inside)
        if os.path.isdir(inside) or path in files:
            flags |= MS_RDONLY  # devices stay writable: /dev/null must take writes
        _mount(None, inside, None, flags)
    for folder in ("tmp", "old-root"):
        os.makedirs(os.path.join(root, folder), mode=0o755, exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    _check(_libc.pivot_root(root.encode(), (root + "/old-root").encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/old-root", MNT_DETACH), "umount old root")
    os.rmdir("/old-root")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _confine(config):
    """namespaces mode: unshare, wait for the maps, build the root, fork PID 1.
    Returns in the zygote; the process that called it waits and exits."""
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID),
           "unshare")
    sources = _open_sources(config["binds"], config["devices"], config["files"])
    write_frame(1, {"stage": "unshared"})
    if read_frame(0).get("stage") != "mapped":
        os._exit(3)
    if config["separate_uid"]:  # the maps were written with privilege: setgroups stays allowed
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # No user namespaces below this one: a task cannot gain capabilities of its own
    # (they would expose kernel code meant for privileged users). This namespace's
    # limit only; the host's is untouched.
    try:
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:
            limit.write("0\n")
    except OSError:
        pass  # an older kernel without per-namespace limits: the rest still holds
    _build_root(config["root"], sources, config["files"])
    pid = os.fork()
    if pid:
        # Outside the new PID namespace: wait for the zygote, then leave with it.
        os.close(0)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _libc.sethostname(b"sandbox", 7)


# --- one task ------------------------------------------------------------------------

def _private_tmp(config, limits):
    """A fresh tmpfs at /tmp for this process's mount namespace. Runtime directories
    that live under /tmp (a venv in a temporary checkout) are attached again on top
    of it, as clones of their read-only mounts (open_tree/move_mount: no /proc here)."""
    trees = []
    for path in config["tmp_binds"]:
        fd = _libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_long(AT_FDCWD), path.encode(),
                           ctypes.c_long(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE))
        if fd < 0:
            _check(-1, "open_tree %s" % path)
        trees.append((path, fd))
    _mount("poet-tmp", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
           "size=%d,nr_inodes=4096,mode=1777" % limits["tmp_bytes"])
    for path, fd in trees:
        os.makedirs(path, exist_ok=True)
        moved = _libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_long(fd), b"", ctypes.c_long(AT_FDCWD),
                              path.encode(), ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH))
        _check(moved, "move_mount %s" % path)
        os.close(fd)


def _drop_privileges(config):
    for capability in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break
    if config["separate_uid"]:
        os.setgroups([])
        os.setresgid(1, 1, 1)
        os.setresuid(1, 1, 1)  # leaving uid 0 also clears the capability sets
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


# What a task never needs and a kernel exploit often does: namespaces (a user namespace of
# its own gives it every capability inside, and in a container /proc/sys is read-only, so
# max_user_namespaces=0 cannot be set there), mounts, tracing, kernel keyrings, eBPF,
# io_uring, userfaultfd, modules, kexec. Denied with EPERM by a seccomp filter on every task.
_DENIED_SYSCALLS = {
    "x86_64": (0xC000003E, 56, {
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
        "request_key": 249, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
        "kexec_file_load": 320, "name_to_handle_at": 303, "open_by_handle_at": 304, "swapon": 167,
        "swapoff": 168, "reboot": 169, "acct": 163,
    }),
    "aarch64": (0xC00000B7, 220, {
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "keyctl": 219, "add_key": 217,
        "request_key": 218, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
        "kexec_file_load": 294, "name_to_handle_at": 264, "open_by_handle_at": 265, "swapon": 224,
        "swapoff": 225, "reboot": 142, "acct": 89,
    }),
}
"""machine -> (AUDIT_ARCH_*, the clone syscall's number, denied syscalls)."""
_CLONE3 = 435  # the same on every architecture; its flags are in memory, out of the filter's reach
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def _seccomp_program(machine):
    """The filter as (code, jt, jf, k) instructions. Another ABI than the native one
    (i386 or x32 calls on x86_64) is denied outright; clone with a namespace flag is
    denied; clone3 answers ENOSYS, so the C library falls back to clone."""
    arch, clone, denied = _DENIED_SYSCALLS[machine]
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, ERRNO, EPERM, ENOSYS = 0x7FFF0000, 0x00050000, 1, 38
    numbers = sorted(set(denied.values()))
    # Laid out as: checks, allow, clone's flag check, allow, ENOSYS, EPERM.
    checks = 3 + (machine == "x86_64") + len(numbers) + 2
    deny = checks + 5  # index of the EPERM return
    program = []

    def jump_to(target):
        return target - len(program) - 1

    program.append((LD, 0, 0, 4))  # seccomp_data.arch
    program.append((JEQ, 0, jump_to(deny), arch))
    program.append((LD, 0, 0, 0))  # seccomp_data.nr
    if machine == "x86_64":
        program.append((JGE, jump_to(deny), 0, 0x40000000))  # x32 system calls
    for number in numbers:
        program.append((JEQ, jump_to(deny), 0, number))
    program.append((JEQ, jump_to(checks + 1), 0, clone))
    program.append((JEQ, jump_to(checks + 4), 0, _CLONE3))
    program.append((RET, 0, 0, ALLOW))
    program.append((LD, 0, 0, 16))  # the low half of args[0]: clone's flags
    program.append((JSET, jump_to(deny), 0, _NAMESPACE_FLAGS))
    program.append((RET, 0, 0, ALLOW))
    program.append((RET, 0, 0, ERRNO | ENOSYS))
    program.append((RET, 0, 0, ERRNO | EPERM))
    assert len(program) == deny + 1
    return program


def _deny_kernel_surface():
    """Install the seccomp filter in this process (and so in all it forks). Hosts of
    another architecture run without it (the other confinement still holds)."""
    machine = os.uname().machine
    if machine not in _DENIED_SYSCALLS:
        return
    program = _seccomp_program(machine)
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    fprog = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(filters)))
    ulong = ctypes.c_ulong
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)), "no_new_privs")
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER; the pointer passed as one (an int would be cut to 32 bits)
    _check(_libc.prctl(PR_SET_SECCOMP, ulong(2), ctypes.c_void_p(ctypes.addressof(fprog)), ulong(0), ulong(0)),
           "seccomp")


def _set_limits(limits):
    for name, value in (("RLIMIT_AS", limits["memory_bytes"]), ("RLIMIT_CPU", limits["cpu_seconds"]),
                        ("RLIMIT_NPROC", limits["processes"]), ("RLIMIT_FSIZE", limits["file_bytes"]),
                        ("RLIMIT_NOFILE", limits["open_files"]), ("RLIMIT_CORE", 0)):
        which = getattr(resource, name)
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def _task_child(config, job, args, limits, tmp, write_fd):
    """In the forked child: confine further, run the job, write its result, exit."""
    try:
        os.setpgid(0, 0)
        if config["isolation"] == "namespaces":
            # Its own mount namespace (for a private /tmp) and IPC namespace (SysV
            # objects it makes die with it instead of outliving it for the next task).
            _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC), "unshare")
            _private_tmp(config, limits)
            _drop_privileges(config)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = sorted({0, 1, 2, write_fd})
        for low, high in zip(keep, keep[1:] + [65536]):
            os.closerange(low + 1, high)
        os.chdir(tmp)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp, "TMPDIR": tmp})
        _set_limits(limits)
        _deny_kernel_surface()
    except BaseException as error:  # the confinement failed: run nothing
        _finish(write_fd, {"ok": False, "error": "sandbox setup failed: " + _describe(error)})
    try:
        value = JOBS[job](args)
        outcome = {"ok": True, "value": value}
    except BaseException as error:
        outcome = {"ok": False, "error": _describe(error)}
    _finish(write_fd, outcome)


def _describe(error):
    return ("%s: %s" % (type(error).__name__, error))[:ERROR_TEXT]


def _finish(write_fd, outcome):
    try:
        data = json.dumps(outcome).encode()
    except (TypeError, ValueError) as error:
        data = json.dumps({"ok": False, "error": "unserialisable result: " + _describe(error)}).encode()
    try:
        while data:
            data = data[os.write(write_fd, data):]
        os.close(write_fd)  # the zygote sees the end now, not after this process is torn down
    except OSError:
        pass
    os._exit(0)  # threads the job started cannot keep the child alive


_SIGNALS = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault",
            signal.SIGXFSZ: "file size limit", signal.SIGABRT: "aborted"}


def _run(config, request):
    """Run a request's tasks, each in a child of its own, and collect their results."""
    limits = request["limits"]
    deadline = time.monotonic() + float(request["timeout"])
    if config["isolation"] == "namespaces":
        tmp = "/tmp"  # each task mounts a tmpfs of its own there
    else:
        import tempfile

        tmp = tempfile.mkdtemp(dir=config["tmp"])
    try:
        return _run_tasks(config, request, limits, deadline, tmp)
    finally:
        if tmp != "/tmp":
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _run_tasks(config, request, limits, deadline, tmp):
    children = []
    for task in request["tasks"]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _task_child(config, task["job"], task["args"], limits, tmp, write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        # Done when the task's own process exits (its pidfd turns readable), even if
        # a process it started still holds the result pipe open.
        children.append({"pid": pid, "fd": read_fd, "pidfd": os.pidfd_open(pid), "data": [], "size": 0,
                         "open": True, "too_large": False})
    timed_out = cancelled = False
    while any(c["open"] for c in children):
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        watched = [fd for c in children if c["open"] for fd in (c["fd"], c["pidfd"])]
        readable, _, _ = select.select(watched + [0], [], [], left)
        if 0 in readable:
            try:
                message = read_frame(0)
            except EOFError:
                os._exit(0)  # the server is gone
            if message.get("cancel"):
                cancelled = True
                break
        for child in children:
            if child["open"] and (child["fd"] in readable or child["pidfd"] in readable):
                _drain(child, limits, exited=child["pidfd"] in readable)
    _kill_all(children)
    results = []
    for child in children:
        os.close(child["fd"])
        os.close(child["pidfd"])
        if child["too_large"]:
            results.append({"ok": False, "error": "the task's output exceeded %d bytes" % limits["output_bytes"]})
        elif child["open"] and cancelled:
            results.append({"ok": False, "error": "cancelled"})
        elif child["open"] and timed_out:
            results.append({"ok": False, "error": "timeout", "timeout": True})
        else:
            try:
                result = json.loads(b"".join(child["data"]) or b"null")
            except ValueError:
                result = {"ok": False, "error": "the task wrote a malformed result"}
            results.append(result or _died(_reap(child["pid"])))
    return {"results": results}


def _drain(child, limits, exited):
    """Read what the task has written; it is finished at end of file or, once its
    process has exited, when nothing more is buffered."""
    while True:
        try:
            chunk = os.read(child["fd"], 65536)
        except BlockingIOError:
            if exited:
                child["open"] = False
            return
        if not chunk:
            child["open"] = False
            return
        if child["size"] + len(chunk) > limits["output_bytes"]:
            child["too_large"] = True
            child["open"] = False
            _kill_task(None, child["pid"])
            return
        child["data"].append(chunk)
        child["size"] += len(chunk)


def _died(status):
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return {"ok": False, "error": "the task died: %s (signal %d)" % (_SIGNALS.get(number, "signal"), number)}
    code = os.waitstatus_to_exitcode(status) if status is not None else "unknown"
    return {"ok": False, "error": "the task exited (code %s) without a result" % code}


def _kill_task(config, pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _kill_all(children):
    """Kill everything the tasks started (reaped later, by reap_all)."""
    if os.getpid() == 1:
        # PID 1 of the sandbox's namespace: -1 reaches every other process in it,
        # however it detached itself (setsid, double fork).
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    else:
        # process mode: only the tasks' process groups can be reached.
        for child in children:
            _kill_task(None, child["pid"])


def _reap(pid):
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return None


def reap_all():
    """Collect every exited child (as PID 1: every orphan of the namespace too)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return


# --- in-process mode -----------------------------------------------------------------
# For jobs that run only POET's own code on untrusted text (bandit's scan): no fork
# per task, the worker stays warm. It is confined like a task before its first one.


def _confine_self(config):
    limits = config["limits"]
    if config["isolation"] == "namespaces":
        _private_tmp(config, limits)
        _drop_privileges(config)
    os.chdir(config["tmp"] if config["isolation"] != "namespaces" else "/tmp")
    # No CPU-time limit: it would add up over the worker's life. The server's
    # deadline stands in for it (a task overrunning its time is stopped by SIGALRM).
    _set_limits({**limits, "cpu_seconds": resource.RLIM_INFINITY})
    _deny_kernel_surface()


class _TimeUp(BaseException):
    pass


def _alarm(signum, frame):
    raise _TimeUp


def _run_here(request):
    limits = request["limits"]
    deadline = time.monotonic() + float(request["timeout"])
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for task in request["tasks"]:
        left = deadline - time.monotonic()
        if left <= 0:
            results.append({"ok": False, "error": "timeout", "timeout": True})
            continue
        try:
            signal.setitimer(signal.ITIMER_REAL, left)
            try:
                outcome = {"ok": True, "value": JOBS[task["job"]](task["args"])}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _TimeUp:
            outcome = {"ok": False, "error": "timeout", "timeout": True}
        except Exception as error:
            outcome = {"ok": False, "error": _describe(error)}
        try:
            size = len(json.dumps(outcome))
        except (TypeError, ValueError) as error:
            outcome, size = {"ok": False, "error": "unserialisable result: " + _describe(error)}, 0
        if size > limits["output_bytes"]:
            outcome = {"ok": False, "error": "the task's output exceeded %d bytes" % limits["output_bytes"]}
        results.append(outcome)
    return {"results": results}


# --- the zygote ----------------------------------------------------------------------

JOBS = {}


def _load_jobs(sources):
    import types

    for index, source in enumerate(sources):
        module = types.ModuleType("poet_sandbox_job_%d" % index)
        exec(compile(source, "<sandbox job %d>" % index, "exec"), module.__dict__)  # nosec B102 - POET's own job code
        JOBS.update(module.JOBS)
        warm = getattr(module, "warm", None)
        if warm is not None:
            warm()


def main():
    config = json.loads(sys.argv[1])
    # PID 1 gets only the signals it handles: the default SIGINT handler would make
    # Python's KeyboardInterrupt reachable by anything in the namespace.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if config["isolation"] == "namespaces":
        try:
            _confine(config)
        except OSError as error:  # the host refuses: one line for the server to quote
            sys.stderr.write("%s\n" % error)
            sys.stderr.flush()
            os._exit(3)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # not traceable by the tasks, even with the same uid
    try:
        _load_jobs(read_frame(0)["jobs"])
        import gc

        gc.freeze()  # forked tasks then share, not copy, the warm heap when collecting
        if config["in_process"]:
            _confine_self(config)
        write_frame(1, {"ready": True, "pid": os.getpid(), "uid": os.getuid()})
        while True:
            try:
                request = read_frame(0)
            except EOFError:
                break
            if request.get("cancel"):
                continue  # it crossed the answer of the request it meant to stop
            if config["in_process"]:
                write_frame(1, _run_here(request))
                continue
            write_frame(1, _run(config, request))
            reap_all()  # after answering: the killed processes' teardown is not the caller's wait
    except EOFError:
        pass
    except BaseException as error:
        try:
            write_frame(1, {"fatal": _describe(error)})
        except OSError:
            pass
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
