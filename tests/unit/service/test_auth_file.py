"""The auth file: what a bad one says, and how keys are chosen."""

from __future__ import annotations

import json

import jwt
import pytest

from poet_grpc.core.errors import Unauthenticated
from poet_grpc.core.principal import Principal
from poet_grpc.api.interceptors._credentials import AuthConfigError, load_auth_file
from poet_grpc.api.interceptors.auth import required_role

from auth_support import API_KEYS, AUDIENCE, ISSUER, private_pem, public_pem, rsa_key, write_auth_file

GOOD_KEY = {"principal": "agent-7", "sha256": "ab" * 32, "roles": ["agent"]}


def _write(tmp_path, document) -> str:
    path = tmp_path / "auth.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


@pytest.mark.parametrize(
    "document, field",
    [
        ("{not json", "not JSON"),
        ([], "(top level)"),
        ({}, "grants no credential"),
        ({"api_key": []}, "unknown field(s) api_key"),
        ({"api_keys": {}}, "api_keys: must be a list"),
        ({"api_keys": [{**GOOD_KEY, "sha256": "abc"}]}, "api_keys[0].sha256"),
        ({"api_keys": [{**GOOD_KEY, "key": "plaintext"}]}, "api_keys[0]: unknown field(s) key"),
        ({"api_keys": [{**GOOD_KEY, "roles": ["root"]}]}, "api_keys[0].roles"),
        ({"api_keys": [{**GOOD_KEY, "roles": []}]}, "api_keys[0].roles"),
        ({"api_keys": [{**GOOD_KEY, "principal": ""}]}, "api_keys[0].principal"),
        ({"api_keys": [GOOD_KEY, {**GOOD_KEY, "principal": "other"}]}, "api_keys[1].sha256: is listed twice"),
        ({"jwt": {"public_key_files": ["missing.pem"], "issuers": [ISSUER], "audience": AUDIENCE}},
         "jwt.public_key_files[0]: cannot read"),
        ({"jwt": {"issuers": [ISSUER], "audience": AUDIENCE}}, "jwt: names no key"),
        ({"jwt": {"public_key_files": ["k.pem"], "issuers": [], "audience": AUDIENCE}}, "jwt.issuers"),
        ({"jwt": {"public_key_files": ["k.pem"], "issuers": [ISSUER]}}, "jwt.audience"),
        ({"jwt": {"public_key_files": ["k.pem"], "issuers": [ISSUER], "audience": AUDIENCE, "leeway_seconds": -1}},
         "jwt.leeway_seconds"),
        ({"jwt": {"public_key_files": ["k.pem"], "issuers": [ISSUER], "audience": AUDIENCE, "algorithms": ["HS256"]}},
         "jwt: unknown field(s) algorithms"),
        ({"jwt": {"public_key_files": ["not-a-key.pem"], "issuers": [ISSUER], "audience": AUDIENCE}},
         "jwt.public_key_files[0]: not-a-key.pem is not a PEM public key"),
        ({"jwt": {"jwks_file": "k.pem", "issuers": [ISSUER], "audience": AUDIENCE}}, "jwt.jwks_file"),
    ],
)
def test_a_bad_auth_file_names_the_field(tmp_path, document, field) -> None:
    (tmp_path / "k.pem").write_bytes(public_pem(rsa_key()))
    (tmp_path / "not-a-key.pem").write_text("hello")
    with pytest.raises(AuthConfigError) as caught:
        load_auth_file(_write(tmp_path, document))
    assert field in str(caught.value)
    assert str(tmp_path / "auth.json") in str(caught.value)


def test_a_small_rsa_key_is_refused(tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "weak.pem").write_bytes(public_pem(weak))
    with pytest.raises(AuthConfigError, match=r"jwt.public_key_files\[0\]: is a 1024-bit RSA key"):
        load_auth_file(_write(tmp_path, {"jwt": {"public_key_files": ["weak.pem"], "issuers": [ISSUER],
                                                 "audience": AUDIENCE}}))


def test_api_keys_are_matched_by_their_digest(tmp_path) -> None:
    authenticator = load_auth_file(write_auth_file(tmp_path).auth_file)
    principal = authenticator.authenticate(API_KEYS["operator"])
    assert principal == Principal("operator-key", "api_key", frozenset({"operator"}))
    assert principal.has_role("agent") and not principal.has_role("admin")
    with pytest.raises(Unauthenticated):
        authenticator.authenticate(API_KEYS["operator"][:-1])
    assert API_KEYS["operator"] not in (tmp_path / "auth.json").read_text()


def test_a_jwks_file_chooses_the_key_by_kid(tmp_path) -> None:
    old, new = rsa_key(), rsa_key()
    keys = []
    for kid, key in (("2026-01", old), ("2026-06", new)):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    authenticator = load_auth_file(_write(tmp_path, {"jwt": {"jwks_file": "jwks.json", "issuers": [ISSUER],
                                                             "audience": AUDIENCE}}))
    claims = {"sub": "svc", "iss": ISSUER, "aud": AUDIENCE, "exp": 4_000_000_000, "roles": "viewer agent"}
    for kid, key in (("2026-01", old), ("2026-06", new)):
        token = jwt.encode(claims, private_pem(key), algorithm="RS256", headers={"kid": kid})
        assert authenticator.authenticate(token).roles == frozenset({"viewer", "agent"})
    # A kid naming one key with a token signed by the other does not verify.
    crossed = jwt.encode(claims, private_pem(new), algorithm="RS256", headers={"kid": "2026-01"})
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(crossed)
    assert caught.value.reason == "JWT_INVALID_SIGNATURE"


def test_roles_by_method() -> None:
    assert required_role("/poet.v1.PoetService/ListEvents") == "viewer"
    assert required_role("/poet.v1.PoetService/EnhanceTranspiled") == "agent"
    assert required_role("/poet.v1.PoetService/ReplayDeadLetters") == "operator"
    assert required_role("/poet.v1.PoetService/SomethingNew") == "admin"
    assert required_role("/other.Service/Method") == "admin"


def test_a_remembered_token_is_refused_once_it_expires(tmp_path) -> None:
    import time

    credentials = write_auth_file(tmp_path)
    document = json.loads(credentials.auth_file.read_text())
    document["jwt"]["leeway_seconds"] = 0
    credentials.auth_file.write_text(json.dumps(document))
    authenticator = load_auth_file(credentials.auth_file)
    token = credentials.token(exp=int(time.time()) + 2)
    assert authenticator.authenticate(token).name == "transpiler-1"
    assert authenticator.authenticate(token).name == "transpiler-1"  # answered from memory
    time.sleep(max(0.0, int(time.time()) + 2 - time.time()) + 1.1)
    with pytest.raises(Unauthenticated) as caught:
        authenticator.authenticate(token)
    assert caught.value.reason == "JWT_EXPIRED"
