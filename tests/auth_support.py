"""Credentials for tests: RSA keys, an auth file, API keys, JWTs and TLS certificates,
all generated on the spot."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://auth.aitomatic.example"
AUDIENCE = "poet"

API_KEYS = {
    "viewer": "pk_viewer_" + "v" * 24,
    "agent": "pk_agent_" + "a" * 24,
    "operator": "pk_operator_" + "o" * 24,
    "admin": "pk_admin_" + "x" * 24,
}
"""One API key per role; the principal of each is "<role>-key"."""


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Credentials:
    """An auth file with one API key per role and a JWT issuer with two signing keys (rotation)."""

    auth_file: Path
    signing_key: rsa.RSAPrivateKey
    second_key: rsa.RSAPrivateKey
    """Also listed in the auth file: tokens signed by either verify."""
    stranger_key: rsa.RSAPrivateKey = field(default_factory=rsa_key)
    """Not listed anywhere."""

    def token(self, sub: str = "transpiler-1", *, roles=("agent",), key: rsa.RSAPrivateKey | None = None,
              algorithm: str = "RS256", headers: dict | None = None, **claims) -> str:
        now = int(time.time())
        payload = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "roles": list(roles)}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, private_pem(key or self.signing_key), algorithm=algorithm, headers=headers)

    def transpiler_token(self, **claims) -> str:
        return self.token(service="aitomatic_transpilation", **claims)


_KEYS_CACHE: list[rsa.RSAPrivateKey] = []


def _keys() -> list[rsa.RSAPrivateKey]:
    """Three RSA keys per test process (generating one takes ~50 ms)."""
    while len(_KEYS_CACHE) < 3:
        _KEYS_CACHE.append(rsa_key())
    return _KEYS_CACHE


def write_auth_file(folder: Path) -> Credentials:
    folder.mkdir(parents=True, exist_ok=True)
    signing, second, stranger = _keys()
    (folder / "keys").mkdir(exist_ok=True)
    (folder / "keys" / "old.pem").write_bytes(public_pem(signing))
    (folder / "keys" / "new.pem").write_bytes(public_pem(second))
    document = {
        "api_keys": [
            {"principal": f"{role}-key", "sha256": hashlib.sha256(key.encode()).hexdigest(), "roles": [role]}
            for role, key in API_KEYS.items()
        ],
        "jwt": {"public_key_files": ["keys/old.pem", "keys/new.pem"], "issuers": [ISSUER], "audience": AUDIENCE,
                "roles_claim": "roles", "leeway_seconds": 5},
    }
    path = folder / "auth.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return Credentials(path, signing, second, stranger)


def bad_tokens(credentials: Credentials) -> dict[str, tuple[str, str]]:
    """Each kind of bad JWT and the ErrorInfo reason it must get."""
    public = credentials.auth_file.parent.joinpath("keys", "old.pem").read_bytes()
    header, body, _ = credentials.token().split(".")
    return {
        "expired": (credentials.token(exp=1_000_000_000, iat=999_999_000), "JWT_EXPIRED"),
        "not yet valid": (credentials.token(nbf=4_000_000_000), "JWT_NOT_YET_VALID"),
        "wrong issuer": (credentials.token(iss="https://evil.example"), "JWT_INVALID_ISSUER"),
        "wrong audience": (credentials.token(aud="someone-else"), "JWT_INVALID_AUDIENCE"),
        "wrong key": (credentials.token(key=credentials.stranger_key), "JWT_INVALID_SIGNATURE"),
        "no exp": (credentials.token(exp=None), "JWT_MISSING_CLAIM"),
        "no sub": (credentials.token(sub=None), "JWT_MISSING_CLAIM"),
        "alg none": (_unsigned(credentials), "JWT_ALGORITHM_NOT_ALLOWED"),
        "HS256 with the public key": (_hs256_with(public), "JWT_ALGORITHM_NOT_ALLOWED"),
        "RS384 header": (credentials.token(algorithm="RS384"), "JWT_ALGORITHM_NOT_ALLOWED"),
        "tampered payload": (f"{header}.{_b64(json.dumps({'sub': 'admin', 'roles': ['admin']}))}.{_}",
                             "JWT_INVALID_SIGNATURE"),
        "garbage": ("eyJhbGciOi.not-a.token", "JWT_MALFORMED"),
    }


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unsigned(credentials: Credentials) -> str:
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600,
              "roles": ["admin"]}
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}))}.{_b64(json.dumps(claims))}."


def _hs256_with(public_pem: bytes) -> str:
    """The classic confusion attack: HMAC-signed with the RSA public key as the secret."""
    now = int(time.time())
    claims = {"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600,
              "roles": ["admin"]}
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{_b64(json.dumps(claims))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).decode().rstrip("=")


def bearer(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    """A client certificate signed by another CA."""
    stranger_key: Path


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_tls(folder: Path) -> Tls:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and a stranger's."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, client_key = _keys()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "POET test CA")])
    ca_cert = _certificate("POET test CA", ca_key, ca_name, ca_key, ca=True)
    files = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server.pem": _certificate("localhost", server_key, ca_name, ca_key, server=True).public_bytes(
            serialization.Encoding.PEM),
        "server.key": private_pem(server_key),
        "client.pem": _certificate("client-1", client_key, ca_name, ca_key).public_bytes(serialization.Encoding.PEM),
        "client.key": private_pem(client_key),
    }
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Other CA")])
    files["stranger.pem"] = _certificate("stranger", client_key, other_name, server_key).public_bytes(
        serialization.Encoding.PEM)
    files["stranger.key"] = private_pem(client_key)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return Tls(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                                       "stranger.pem", "stranger.key")))
