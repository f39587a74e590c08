"""What authentication costs per call.

Two `poet-grpc serve` processes: one without an auth file, one with an API key
and an RS256 JWT issuer. The same cheap RPC (ListDomains) is timed over gRPC at
concurrency 1 with no credential, an API key and a JWT; beside them, in this
process, the verification alone (Authenticator.authenticate) and its library
floor (hashlib.sha256 of the key, jwt.decode of the token). A verified token is
remembered until it expires, so "first sight" is what a new token costs once.

    .venv/bin/python bench/auth.py [--calls N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import Server, percentile  # noqa: E402
from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc  # noqa: E402
from poet_grpc.api.interceptors._credentials import load_auth_file  # noqa: E402

API_KEY = "pk_bench_" + "k" * 32
ISSUER, AUDIENCE = "https://auth.bench.example", "poet"


def write_auth(folder: Path) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "jwt.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    auth = folder / "auth.json"
    auth.write_text(json.dumps({
        "api_keys": [{"principal": "bench", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(), "roles": ["viewer"]}],
        "jwt": {"public_key_files": ["jwt.pem"], "issuers": [ISSUER], "audience": AUDIENCE},
    }))
    now = int(time.time())
    token = jwt.encode({"sub": "bench-jwt", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600, "roles": ["viewer"]},
                       key, algorithm="RS256")
    return auth, token


async def time_calls(address: str, metadata: tuple, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = poet_service_pb2_grpc.PoetServiceStub(channel)
        for _ in range(50):  # warm up the connection and the server's caches
            await stub.ListDomains(pb.ListDomainsRequest(), metadata=metadata)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.ListDomains(pb.ListDomainsRequest(), metadata=metadata)
            samples.append((time.perf_counter() - started) * 1e6)
        return samples


def time_function(fn, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per row [3000]")
    parser.add_argument("--quick", action="store_true", help="500 calls per row")
    args = parser.parse_args()
    calls = 500 if args.quick else args.calls
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        auth_file, token = write_auth(folder)
        (folder / "open").mkdir()
        (folder / "closed").mkdir()
        open_server = Server(folder / "open")
        closed_server = Server(folder / "closed", env={"POET_AUTH_FILE": str(auth_file)})
        try:
            rows = []
            # Interleaved rounds, so drift on a shared machine hits every row alike.
            results: dict[str, list[float]] = {"none": [], "api key": [], "jwt": []}
            for _ in range(3):
                results["none"] += asyncio.run(time_calls(open_server.address, (), calls // 3))
                results["api key"] += asyncio.run(time_calls(
                    closed_server.address, (("authorization", f"Bearer {API_KEY}"),), calls // 3))
                results["jwt"] += asyncio.run(time_calls(
                    closed_server.address, (("authorization", f"Bearer {token}"),), calls // 3))
        finally:
            open_server.stop()
            closed_server.stop()
        authenticator = load_auth_file(auth_file)
        public = serialization.load_pem_public_key((folder / "jwt.pem").read_bytes())
        local = {
            "verify api key (authenticate)": time_function(lambda: authenticator.authenticate(API_KEY), calls),
            "  floor: hashlib.sha256": time_function(lambda: hashlib.sha256(API_KEY.encode()).digest(), calls),
            "verify jwt (authenticate)": time_function(lambda: authenticator.authenticate(token), calls),
            "  first sight (no memory)": time_function(lambda: authenticator._verify_jwt_signature(token), calls),
            "  floor: jwt.decode": time_function(
                lambda: jwt.decode(token, public, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER), calls),
        }
    base = statistics.median(results["none"])
    print(f"ListDomains over gRPC, concurrency 1, {len(results['none'])} calls per row (µs)")
    print(f"{'credential':<32}{'p50':>10}{'p95':>10}{'p50 - none':>12}{'ratio':>8}")
    for name, samples in results.items():
        p50 = statistics.median(samples)
        rows.append((name, p50))
        print(f"{name:<32}{p50:>10.1f}{percentile(samples, 0.95):>10.1f}{p50 - base:>12.1f}{p50 / base:>8.2f}")
    print()
    print(f"verification alone, in this process, {calls} calls (µs)")
    print(f"{'step':<32}{'p50':>10}{'p95':>10}")
    for name, samples in local.items():
        print(f"{name:<32}{statistics.median(samples):>10.1f}{percentile(samples, 0.95):>10.1f}")


if __name__ == "__main__":
    main()
