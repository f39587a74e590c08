"""Helpers for the sandbox tests: finding host processes by a marker in their
argv or name, through the host's /proc (the sandbox has none), and counting the
connections a listener accepted."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from pathlib import Path


def host_processes(marker: str) -> list[int]:
    """Live host processes whose argv or name contains marker (zombies have neither)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        if marker in cmdline or marker in comm:
            found.append(int(entry))
    return found


def wait_for_processes(marker: str, present: bool, within: float) -> list[int]:
    """Poll until processes with marker are (present) or are not there, or `within` s pass."""
    deadline = time.monotonic() + within
    while True:
        found = host_processes(marker)
        if bool(found) == present or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def kill_pids(pids) -> None:
    """Clean up processes a test itself caused (found by their unique marker)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def survivors(marker: str, within: float = 1.0) -> list[int]:
    """Processes with marker still alive after `within` seconds (a process SIGKILLed
    just before the answer may take a moment to go); kills any found."""
    found = wait_for_processes(marker, present=False, within=within)
    kill_pids(found)
    return found


def unique_sleep() -> str:
    """A `sleep` duration no other process on this host has in its argv (and long
    enough that a survivor is still there when we look)."""
    return f"{300 + secrets.randbelow(10**6) / 10**6:.6f}"


def accepted(sock: socket.socket) -> int:
    """Connections waiting on a non-blocking listening socket (each is closed)."""
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1
