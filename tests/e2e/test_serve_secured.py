"""The real `poet-grpc serve` with an auth file, TLS and an audit log: the shipped
clients (the shell client, an enhanced module's event emitter) send their
credentials; serving beyond loopback without auth is refused unless --insecure;
a bad auth file stops startup naming the field."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import httpx
import pytest

from support import read_until

from poet_grpc._gen.poet.v1 import poet_service_pb2 as pb, poet_service_pb2_grpc

from auth_support import API_KEYS, bearer, write_auth_file, write_tls
from test_serve import free_port
from support import read_until

CODE = "def double(x: int) -> int:\n    return x * 2\n"


class SecuredService:
    def __init__(self, tmp: Path, *extra: str, tls: bool = True):
        self.tmp = tmp
        self.credentials = write_auth_file(tmp / "auth")
        self.tls = write_tls(tmp / "tls")
        self.grpc_address = f"127.0.0.1:{free_port()}"
        self.http_port = free_port()
        self.audit = tmp / "audit.log"
        command = [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", self.grpc_address,
                   "--http-listen", f"127.0.0.1:{self.http_port}", "--db", str(tmp / "poet.db"),
                   "--auth-file", str(self.credentials.auth_file), "--audit-log", str(self.audit), *extra]
        if tls:
            command += ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.http_port}"
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=dict(os.environ, POET_SHUTDOWN_GRACE_SECONDS="2",
                                                 POET_SHUTDOWN_DRAIN_SECONDS="0"))
        self.output = read_until(self.process, "REST gateway listening")

    def cli(self, *args: str, token: str = "", tls: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, POET_TOKEN=token) if token else {k: v for k, v in os.environ.items() if k != "POET_TOKEN"}
        extra = ["--tls-ca", str(self.tls.ca)] if tls else []
        return subprocess.run([sys.executable, "-m", "poet_grpc", *args, "--server", f"localhost:{self.grpc_address.rpartition(':')[2]}",
                               *extra], capture_output=True, text=True, timeout=60, env=env)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _trust(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    service = SecuredService(tmp_path_factory.mktemp("secured"))
    yield service
    service.stop()


def test_startup_says_how_callers_authenticate(secured) -> None:
    text = "".join(secured.output)
    assert "(TLS)" in text and "https://127.0.0.1" in text
    assert "authentication: 4 API key(s); RS256 JWTs (2 key(s)" in text


def test_the_shell_client_sends_its_token_over_tls(secured, tmp_path) -> None:
    source = tmp_path / "double.py"
    source.write_text(CODE)
    refused = secured.cli("enhance", str(source), "--function", "double")
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr and "CREDENTIAL_MISSING" in refused.stderr
    viewer = secured.cli("enhance", str(source), "--function", "double", token=API_KEYS["viewer"])
    assert viewer.returncode == 1 and "PERMISSION_DENIED" in viewer.stderr and "required_role=agent" in viewer.stderr
    done = secured.cli("enhance", str(source), "--function", "double", "--token", API_KEYS["agent"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "v1"
    assert secured.cli("versions", "double", token=secured.credentials.token(roles=["viewer"])).returncode == 0
    plain = secured.cli("domains", token=API_KEYS["viewer"], tls=False)  # TLS port, plaintext client
    assert plain.returncode == 3, plain.stderr


def test_rest_over_tls_with_the_same_answers(secured) -> None:
    with httpx.Client(base_url=secured.url, verify=_trust(secured.tls.ca), timeout=30) as client:
        assert client.get("/health/ready").json()["authentication"] == "api_keys+jwt"
        anonymous = client.get("/v1/domains")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        ok = client.get("/v1/domains", headers={"authorization": f"Bearer {API_KEYS['viewer']}"})
        assert ok.status_code == 200 and ok.json()["domains"]
    with pytest.raises(httpx.TransportError):  # the listener speaks TLS only
        httpx.get(secured.url.replace("https", "http") + "/health/live", timeout=10)


def test_the_event_emitter_sends_its_token(secured, tmp_path) -> None:
    token = secured.credentials.token("emitter-1", roles=["agent"])
    with httpx.Client(base_url=secured.url, verify=_trust(secured.tls.ca), timeout=60) as client:
        enhanced = client.post("/api/v1/functions/enhance", json={"function_name": "triple", "original_code":
                               CODE.replace("double", "triple").replace("* 2", "* 3")},
                               headers={"authorization": f"Bearer {API_KEYS['agent']}"})
        assert enhanced.status_code == 200, enhanced.text
        module = tmp_path / "triple_enhanced.py"
        module.write_text(enhanced.json()["enhanced_code"]["python"])
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(tmp_path)!r})
            import triple_enhanced as m
            assert m.triple(2) == 6
            m._poet_flush_events(10)
            print(m.triple.poet_metrics["events_sent"], m.triple.poet_metrics["events_failed"])
        """)
        env = dict(os.environ, POET_EVENTS_URL=secured.url, SSL_CERT_FILE=str(secured.tls.ca))
        without = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
        assert without.stdout.split() == ["0", "1"], without.stderr  # refused: no token
        sent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              env=dict(env, POET_EVENTS_TOKEN=token))
        assert sent.stdout.split() == ["1", "0"], sent.stderr
        events = client.get("/api/v1/functions/triple/events", params={"event_type": "function.execution"},
                            headers={"authorization": f"Bearer {API_KEYS['viewer']}"}).json()["events"]
    assert [e["metadata"]["principal"] for e in events] == ["emitter-1"]


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path) -> None:
    service = SecuredService(tmp_path, "--tls-client-ca", str(write_tls(tmp_path / "tls").ca))
    try:
        tls = service.tls
        ca = tls.ca.read_bytes()

        def list_domains(cert: Path | None, key: Path | None):
            credentials = grpc.ssl_channel_credentials(ca, key.read_bytes() if key else None,
                                                       cert.read_bytes() if cert else None)
            with grpc.secure_channel(f"localhost:{service.grpc_address.rpartition(':')[2]}", credentials) as channel:
                stub = poet_service_pb2_grpc.PoetServiceStub(channel)
                return stub.ListDomains(pb.ListDomainsRequest(), metadata=bearer(API_KEYS["viewer"]), timeout=10)

        assert list_domains(tls.client_cert, tls.client_key).domains
        for cert, key in ((None, None), (tls.stranger_cert, tls.stranger_key)):
            with pytest.raises(grpc.RpcError) as caught:
                list_domains(cert, key)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with httpx.Client(verify=_trust(tls.ca, tls.client_cert, tls.client_key), timeout=30) as client:
            assert client.get(f"{service.url}/health/live").status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{service.url}/health/live", verify=_trust(tls.ca), timeout=10)
    finally:
        service.stop()


def test_the_audit_log_holds_no_secret(secured) -> None:
    text = secured.audit.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert {r["auth"] for r in records} >= {"api_key", "jwt", "refused"}
    assert any(r["http_path"] == "/api/v1/functions/enhance" for r in records)
    for secret in API_KEYS.values():
        assert secret not in text
    assert "eyJ" not in text and "Bearer" not in text and "return x" not in text


def _serve(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poet_grpc", "serve", "--db", str(tmp_path / "x.db"), *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, **(env or {})))


def test_serving_beyond_loopback_without_auth_is_refused_unless_insecure(tmp_path) -> None:
    refused = _serve(tmp_path, "--grpc-listen", f"0.0.0.0:{free_port()}", "--no-gateway")
    assert refused.returncode == 1
    assert "cannot start" in refused.stderr and "--insecure" in refused.stderr and "--auth-file" in refused.stderr
    refused = _serve(tmp_path, "--http-listen", f"0.0.0.0:{free_port()}", "--grpc-listen", f"127.0.0.1:{free_port()}")
    assert refused.returncode == 1 and "http_listen=0.0.0.0" in refused.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "poet_grpc", "serve", "--grpc-listen", f"0.0.0.0:{port}", "--no-gateway",
         "--db", str(tmp_path / "y.db")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, POET_INSECURE="true", POET_SHUTDOWN_DRAIN_SECONDS="0"))
    try:
        output = "".join(read_until(process, "authentication: off"))
        assert "every caller may call every method" in output
        line = process.stdout.readline()
        assert "WARNING: serving without authentication beyond loopback" in line
    finally:
        process.terminate()
        process.wait(20)


def test_a_bad_auth_file_stops_startup_naming_the_field(tmp_path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"api_keys": [{"principal": "p", "sha256": "123", "roles": ["agent"]}]}))
    result = _serve(tmp_path, "--grpc-listen", f"127.0.0.1:{free_port()}", "--no-gateway", env={"POET_AUTH_FILE": str(path)})
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "api_keys[0].sha256" in result.stderr
    assert "Traceback" not in result.stderr
