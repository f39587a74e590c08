"""A seccomp filter that makes unshare(2) fail with EPERM, as the default seccomp
profiles of container runtimes do: how the tests show what POET does on a host
that refuses namespaces."""

from __future__ import annotations

import ctypes
import platform
import struct

_UNSHARE = {"x86_64": (0xC000003E, 272), "aarch64": (0xC00000B7, 97)}
"""machine -> (AUDIT_ARCH_*, the unshare syscall's number)."""


def supported() -> bool:
    return platform.machine() in _UNSHARE


def deny_unshare() -> None:
    """Install the filter in this process (and so in what it execs); for preexec_fn."""
    arch, number = _UNSHARE[platform.machine()]
    EPERM, RET_ERRNO, RET_ALLOW = 1, 0x00050000, 0x7FFF0000
    LD_ABS, JEQ, RET = 0x20, 0x15, 0x06
    program = [
        (LD_ABS, 0, 0, 4),          # seccomp_data.arch
        (JEQ, 0, 3, arch),          # another ABI: allow
        (LD_ABS, 0, 0, 0),          # seccomp_data.nr
        (JEQ, 0, 1, number),
        (RET, 0, 0, RET_ERRNO | EPERM),
        (RET, 0, 0, RET_ALLOW),
    ]
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(filters))
    buffer = ctypes.create_string_buffer(fprog)
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    if libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "no_new_privs")
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER; the pointer as a pointer (a bare int would be cut to 32 bits)
    if libc.prctl(22, ulong(2), ctypes.c_void_p(ctypes.addressof(buffer)), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp")
