"""A real PostgreSQL server for tests, started by the tests.

Debian's postgresql binaries (/usr/lib/postgresql/<version>/bin) run a throwaway
cluster in a temporary directory on a free port of 127.0.0.1, once per test session,
stopped (fast shutdown) and deleted at the end; every test gets a fresh database of
its own. postgres refuses to run as root: as root the cluster runs as the `postgres`
system user. Without the binaries the PostgreSQL tests skip and say why
(`python3 dev.py test` installs them as root on Debian).

Fixtures: `postgres_server` (the session's server) and `postgres_url` (a new
database; its postgresql:// URL), imported by tests/conftest.py. sqlite_only marks a
server test that looks at the SQLite file itself.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SKIP_REASON = (
    "PostgreSQL tests need Debian's postgresql binaries (/usr/lib/postgresql/*/bin/initdb): "
    "apt-get install postgresql, or run `python3 dev.py test` as root on Debian"
)


def on_postgres() -> bool:
    """POET_TEST_DB=postgresql: the server fixtures (tests/conftest.py) use PostgreSQL."""
    return os.environ.get("POET_TEST_DB") == "postgresql"


sqlite_only = pytest.mark.skipif(on_postgres(), reason="looks at the SQLite file itself (POET_TEST_DB=postgresql)")
"""For a test of the server fixtures that reads or writes the SQLite file behind the server."""


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    return Path(max(found, key=lambda p: int(Path(p).parent.parent.name))).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One throwaway cluster: start(), create_database() per test, stop()."""

    def __init__(self, bin_dir: Path):
        self._bin = bin_dir
        self._user = None  # (uid, gid) to run as, when we are root
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run the server as") from None
            self._user = (entry.pw_uid, entry.pw_gid)
        self.root = Path(tempfile.mkdtemp(prefix="poet-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._names = itertools.count(1)
        if self._user:
            os.chown(self.root, *self._user)

    def _run(self, *command: str) -> None:
        # Started with posix_spawn (no cwd, user or preexec_fn of subprocess's own, and
        # close_fds=False): a fork would run gRPC's fork handlers in the child, which can
        # crash it while the test process serves gRPC. setpriv drops root, env -C sets
        # the working directory (postgres must be able to read it).
        demote = [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={self._user[0]}", f"--regid={self._user[1]}", "--clear-groups"] \
            if self._user else []
        done = subprocess.run([*demote, shutil.which("env") or "/usr/bin/env", "-C", str(self.root), str(self._bin / command[0]), *command[1:]],
                              capture_output=True, text=True, close_fds=False)
        if done.returncode:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> None:
        # C locale: text compares byte by byte, as in SQLite (the store declares
        # COLLATE "C" itself too). No fsync: a throwaway cluster.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")
        for attempt in range(3):  # the free port may be taken before the server binds it
            self.port = _free_port()
            options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                       "-c full_page_writes=off -c max_connections=200")
            try:
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.root / "log"),
                          "-o", options)
                return
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log()}") from None

    def halt(self) -> None:
        """Stop the server at once (immediate shutdown: clients lose their connections), keeping its data."""
        self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data))

    def restart(self) -> None:
        """Start a halted server again, on the same port."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", options)

    def log(self) -> str:
        try:
            return (self.root / "log").read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.port:
                self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.data))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        # ICU en-US: a text order that is not byte order (as most servers have), so a
        # test notices if the store relies on the database's collation.
        name = f"poet_test_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    try:
        server = PostgresServer(bin_dir)
    except RuntimeError as exc:
        pytest.skip(f"cannot run PostgreSQL here: {exc}")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
