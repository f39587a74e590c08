"""Set up the project and run it, on a machine with only Python 3.11+, pip and npm.

    python3 dev.py serve [ARGS]   set up, then run `poet-grpc serve ARGS` (gRPC :50051, REST :8080)
    python3 dev.py test [ARGS]    set up, then run every check: generated files fresh, OpenAPI valid, buf lint, pytest ARGS
                                  (without ARGS: the whole suite, then the integration and gateway suites
                                  again on PostgreSQL; as root on Debian, also installs chromium for the
                                  browser tests and postgresql for the PostgreSQL tests)
    python3 dev.py setup          only set up

Setting up creates .venv/ and installs the project with its dev extras into it
(again only when pyproject.toml changed), and installs the npm packages: buf for
the contract checks, the Node.js gRPC client for its test (again only when
package.json or package-lock.json changed). Standard library only: this script
runs before anything is installed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".poet-installed"
NPM_STAMP = ROOT / "node_modules" / ".poet-installed"


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(*command: str | os.PathLike, **kwargs) -> None:
    started = time.monotonic()
    result = subprocess.run([str(c) for c in command], cwd=ROOT, **kwargs)
    if result.returncode != 0:
        sys.exit(f"dev.py: failed ({result.returncode}) after {time.monotonic() - started:.0f}s: {' '.join(map(str, command))}")


def _fingerprint(*files: str) -> str:
    digest = hashlib.sha256()
    for name in files:
        path = ROOT / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def setup(*, with_buf: bool) -> None:
    if sys.version_info < (3, 11):
        sys.exit("dev.py: Python 3.11 or newer is required")
    wanted = _fingerprint("pyproject.toml")
    if not (BIN / "python").exists():
        step("creating .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not STAMP.exists() or STAMP.read_text() != wanted:
        step("installing poet-grpc and its dependencies into .venv (first run takes a minute or two)")
        run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
        STAMP.write_text(wanted)
    npm_wanted = _fingerprint("package.json", "package-lock.json")
    if with_buf and (not NPM_STAMP.exists() or NPM_STAMP.read_text() != npm_wanted):
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("dev.py: npm is needed for buf (contract lint) and the Node.js client test; install Node.js and npm")
        step("installing buf and the Node.js gRPC client from npm")
        # `npm install` (not `npm ci`): it follows package-lock.json too, and npm ci
        # rejects a lock that records only this platform's optional buf binary.
        run(npm, "install", "--no-audit", "--no-fund", "--loglevel=error")
        NPM_STAMP.write_text(_fingerprint("package.json", "package-lock.json"))


CHROMIUM = Path("/usr/bin/chromium")


def install_browser() -> None:
    """Debian's chromium for the browser tests (tests/gateway/test_browser.py), when
    missing and this is root on Debian; elsewhere those tests skip and say why."""
    if CHROMIUM.exists():
        return
    if not Path("/etc/debian_version").exists() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        step(f"{CHROMIUM} is missing and this is not root on Debian: the browser tests will be skipped")
        return
    step("installing Debian's chromium for the browser tests (apt-get; a few minutes the first time)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-q", env=env)
    run("apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", env=env)


def install_postgresql() -> None:
    """Debian's postgresql server binaries for the PostgreSQL tests (tests/postgres_support.py
    runs a throwaway cluster with them), when missing and this is root on Debian;
    elsewhere those tests skip and say why."""
    if glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return
    if not Path("/etc/debian_version").exists() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        step("/usr/lib/postgresql/*/bin/initdb is missing and this is not root on Debian: the PostgreSQL tests will be skipped")
        return
    step("installing Debian's postgresql for the PostgreSQL tests (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-q", env=env)
    run("apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql", env=env)


def test(args: list[str]) -> None:
    setup(with_buf=True)
    install_browser()
    install_postgresql()
    step("checking generated stubs and gateway/openapi.json are fresh")
    run(BIN / "python", "scripts/generate.py", "--check")
    step("validating gateway/openapi.json (OpenAPI 3.0)")
    run(BIN / "openapi-spec-validator", "--schema", "3.0", "gateway/openapi.json")
    step("buf lint")
    run(ROOT / "node_modules" / ".bin" / "buf", "lint")
    step("pytest")
    if args:
        os.execv(BIN / "python", [str(BIN / "python"), "-m", "pytest", *args])
    run(BIN / "python", "-m", "pytest")
    # The suites that run the server, again on PostgreSQL (tests/postgres_support.py).
    step("pytest on PostgreSQL: the integration and gateway suites (POET_TEST_DB=postgresql)")
    # (The two PostgreSQL-only modules ran in the first pass already.)
    run(BIN / "python", "-m", "pytest", "tests/integration", "tests/gateway",
        "--ignore=tests/integration/test_postgres_server.py", "--ignore=tests/integration/test_postgres_outage.py",
        env={**os.environ, "POET_TEST_DB": "postgresql"})


def serve(args: list[str]) -> None:
    setup(with_buf=False)
    os.execv(BIN / "poet-grpc", [str(BIN / "poet-grpc"), "serve", *args])


def main() -> None:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("--help", [])
    if command == "serve":
        serve(args)
    elif command == "test":
        test(args)
    elif command == "setup":
        setup(with_buf=True)
    else:
        print(__doc__)
        sys.exit(0 if command in ("-h", "--help") else 2)


if __name__ == "__main__":
    main()
