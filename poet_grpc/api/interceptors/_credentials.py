"""Credentials: the auth file, API keys and RS256 JWTs.

The auth file (POET_AUTH_FILE) is JSON:

    {"api_keys": [{"principal": "agent-7", "sha256": "<hex sha256 of the key>", "roles": ["agent"]}],
     "jwt": {"public_key_files": ["keys/aitomatic.pem"], "jwks_file": "",
             "issuers": ["https://auth.aitomatic.example"], "audience": "poet",
             "roles_claim": "roles", "leeway_seconds": 30}}

Relative paths are resolved against the file's folder. API keys are kept only as
SHA-256 digests and compared in constant time against every stored digest. JWTs
must be RS256 (the header cannot ask for another algorithm), signed by one of the
configured keys (a JWKS key chosen by ``kid``, else each PEM key in turn, so a new
key can be added before the old one is removed), and carry ``sub``, ``exp``,
``iss`` and ``aud``; ``nbf`` is honoured when present.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from poet_grpc.core.errors import Unauthenticated
from poet_grpc.core.principal import ROLES, Principal

__all__ = ["AuthConfigError", "Authenticator", "load_auth_file"]

ALGORITHM = "RS256"
MAX_CREDENTIAL = 16 * 1024
"""Longest credential looked at; a longer one is refused unread."""
MIN_RSA_BITS = 2048
MAX_VERIFIED_TOKENS = 10_000
"""Verified tokens remembered until they expire (least recently used dropped first)."""
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,127}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class AuthConfigError(ValueError):
    """The auth file is unreadable or breaks its schema; the message names the field."""


@dataclass(frozen=True)
class _ApiKey:
    principal: str
    digest: bytes
    roles: frozenset[str]


@dataclass(frozen=True)
class _JwtPolicy:
    keys_by_kid: dict[str, Any]
    """JWKS keys by kid."""
    pem_keys: tuple[Any, ...]
    issuers: tuple[str, ...]
    audience: str
    roles_claim: str
    leeway_seconds: float


def _roles(value: Any) -> frozenset[str]:
    """Known roles named by a JWT claim: a list of strings or one space-separated string."""
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return frozenset()
    return frozenset(r for r in value if isinstance(r, str) and r in ROLES)


class Authenticator:
    """Turns a bearer credential into a Principal, or raises Unauthenticated."""

    def __init__(self, api_keys: list[_ApiKey], policy: _JwtPolicy | None, source: str = ""):
        self._api_keys = api_keys
        self._jwt = policy
        self._verified: collections.OrderedDict[str, tuple[Principal, float]] = collections.OrderedDict()
        """Tokens that verified -> (principal, exp): an agent sends one token on many
        calls, and an RSA verification costs ~0.1-0.2 ms."""
        self.source = source
        """The auth file this came from."""

    @property
    def mode(self) -> str:
        """"api_keys", "jwt" or "api_keys+jwt": what readiness reports."""
        return "+".join(k for k, on in (("api_keys", self._api_keys), ("jwt", self._jwt is not None)) if on)

    @property
    def describe(self) -> str:
        parts = [f"{len(self._api_keys)} API key(s)"]
        if self._jwt is not None:
            keys = len(self._jwt.keys_by_kid) + len(self._jwt.pem_keys)
            parts.append(f"RS256 JWTs ({keys} key(s), issuers {', '.join(self._jwt.issuers)})")
        return "; ".join(parts)

    def authenticate(self, credential: str) -> Principal:
        if not credential or len(credential) > MAX_CREDENTIAL:
            raise Unauthenticated("the credential is empty or too long", reason="CREDENTIAL_MALFORMED")
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            return self._verify_jwt(credential)
        return self._verify_api_key(credential)

    def _verify_api_key(self, key: str) -> Principal:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found = None
        for entry in self._api_keys:  # every entry is compared: the time does not depend on which matched
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            raise Unauthenticated("the API key is not valid", reason="INVALID_API_KEY")
        return Principal(found.principal, "api_key", found.roles)

    def _verify_jwt(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires + self._jwt.leeway_seconds:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal = self._verify_jwt_signature(token)
        exp = principal.claims.get("exp")
        if isinstance(exp, (int, float)):
            self._verified[token] = (principal, float(exp))
            while len(self._verified) > MAX_VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        return principal

    def _verify_jwt_signature(self, token: str) -> Principal:
        policy = self._jwt
        if policy is None:
            raise Unauthenticated("this server does not accept JWTs", reason="JWT_NOT_ACCEPTED")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the JWT is malformed", reason="JWT_MALFORMED") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(f"the JWT must be signed with {ALGORITHM}", reason="JWT_ALGORITHM_NOT_ALLOWED")
        kid = header.get("kid")
        if isinstance(kid, str) and kid in policy.keys_by_kid:
            keys: tuple[Any, ...] = (policy.keys_by_kid[kid],)
        else:
            keys = policy.pem_keys
        claims = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=policy.audience,
                    issuer=policy.issuers,
                    leeway=policy.leeway_seconds,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("the JWT has expired", reason="JWT_EXPIRED") from None
            except jwt.ImmatureSignatureError:
                raise Unauthenticated("the JWT is not valid yet (nbf)", reason="JWT_NOT_YET_VALID") from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated("the JWT's issuer is not accepted", reason="JWT_INVALID_ISSUER") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("the JWT is not meant for this service (aud)",
                                      reason="JWT_INVALID_AUDIENCE") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthenticated(f"the JWT lacks the {exc.claim!r} claim", reason="JWT_MISSING_CLAIM") from None
            except jwt.PyJWTError:
                raise Unauthenticated("the JWT is malformed", reason="JWT_MALFORMED") from None
        if claims is None:
            raise Unauthenticated("the JWT's signature does not verify", reason="JWT_INVALID_SIGNATURE")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise Unauthenticated("the JWT's 'sub' claim must be a non-empty string", reason="JWT_MISSING_CLAIM")
        return Principal(subject[:256], "jwt", _roles(claims.get(policy.roles_claim)), claims=claims)


# -- the file ---------------------------------------------------------------


def _fail(path: Path, field: str, problem: str) -> AuthConfigError:
    return AuthConfigError(f"auth file {path}: {field}: {problem}")


def _keys_only(path: Path, where: str, value: dict, allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(path, where, f"unknown field(s) {', '.join(unknown)} (expected {', '.join(sorted(allowed))})")


def _string_list(path: Path, field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(path, field, "must be a list of non-empty strings")
    return value


def _api_keys(path: Path, value: Any) -> list[_ApiKey]:
    if not isinstance(value, list):
        raise _fail(path, "api_keys", "must be a list")
    keys: list[_ApiKey] = []
    seen: set[bytes] = set()
    for i, entry in enumerate(value):
        where = f"api_keys[{i}]"
        if not isinstance(entry, dict):
            raise _fail(path, where, "must be an object with principal, sha256 and roles")
        _keys_only(path, where, entry, {"principal", "sha256", "roles"})
        principal, digest, roles = entry.get("principal"), entry.get("sha256"), entry.get("roles")
        if not isinstance(principal, str) or not _PRINCIPAL.fullmatch(principal):
            raise _fail(path, f"{where}.principal",
                        "must be 1-128 characters: letters, digits and . _ @ : / + - (not starting with a symbol)")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _fail(path, f"{where}.sha256", "must be the 64 hex digits of the key's SHA-256 (sha256sum)")
        if not isinstance(roles, list) or not roles or not all(r in ROLES for r in roles):
            raise _fail(path, f"{where}.roles", f"must be a non-empty list of {', '.join(ROLES)}")
        raw = bytes.fromhex(digest)
        if raw in seen:
            raise _fail(path, f"{where}.sha256", "is listed twice")
        seen.add(raw)
        keys.append(_ApiKey(principal, raw, frozenset(roles)))
    return keys


def _rsa_key(path: Path, field: str, key: Any) -> Any:
    if not isinstance(key, rsa.RSAPublicKey):
        raise _fail(path, field, "must be an RSA public key (RS256)")
    if key.key_size < MIN_RSA_BITS:
        raise _fail(path, field, f"is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits are required")
    return key


def _read(path: Path, field: str, file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise _fail(path, field, f"cannot read {file}: {exc.strerror or exc}") from None


def _jwt_policy(path: Path, value: Any) -> _JwtPolicy:
    if not isinstance(value, dict):
        raise _fail(path, "jwt", "must be an object")
    _keys_only(path, "jwt", value, {"public_key_files", "jwks_file", "issuers", "audience", "roles_claim",
                                    "leeway_seconds"})
    folder = path.parent
    pem_keys = []
    for i, name in enumerate(_string_list(path, "jwt.public_key_files", value.get("public_key_files", []))):
        field = f"jwt.public_key_files[{i}]"
        data = _read(path, field, folder / name)
        try:
            key = load_pem_public_key(data)
        except ValueError:
            raise _fail(path, field, f"{name} is not a PEM public key") from None
        pem_keys.append(_rsa_key(path, field, key))
    keys_by_kid: dict[str, Any] = {}
    jwks_file = value.get("jwks_file", "")
    if not isinstance(jwks_file, str):
        raise _fail(path, "jwt.jwks_file", "must be a path (a string)")
    if jwks_file:
        data = _read(path, "jwt.jwks_file", folder / jwks_file)
        try:
            document = json.loads(data)
            jwks = jwt.PyJWKSet.from_dict(document)
        except (ValueError, jwt.PyJWTError) as exc:
            raise _fail(path, "jwt.jwks_file", f"{jwks_file} is not a JWK set ({exc})") from None
        for i, jwk in enumerate(jwks.keys):
            field = f"jwt.jwks_file keys[{i}]"
            if not jwk.key_id:
                raise _fail(path, field, "has no kid (tokens choose their JWKS key by kid)")
            keys_by_kid[jwk.key_id] = _rsa_key(path, field, jwk.key)
    if not pem_keys and not keys_by_kid:
        raise _fail(path, "jwt", "names no key: set public_key_files or jwks_file")
    issuers = _string_list(path, "jwt.issuers", value.get("issuers"))
    if not issuers:
        raise _fail(path, "jwt.issuers", "must name at least one issuer")
    audience = value.get("audience")
    if not isinstance(audience, str) or not audience.strip():
        raise _fail(path, "jwt.audience", "must be a non-empty string (the aud every token must carry)")
    roles_claim = value.get("roles_claim", "roles")
    if not isinstance(roles_claim, str) or not roles_claim:
        raise _fail(path, "jwt.roles_claim", "must be a claim name")
    leeway = value.get("leeway_seconds", 30)
    if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or not 0 <= leeway <= 600:
        raise _fail(path, "jwt.leeway_seconds", "must be a number of seconds from 0 to 600")
    return _JwtPolicy(keys_by_kid, tuple(pem_keys), tuple(issuers), audience, roles_claim, float(leeway))


def load_auth_file(path: str | Path) -> Authenticator:
    """The Authenticator an auth file describes; AuthConfigError naming the field when it is bad."""
    path = Path(path)
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise AuthConfigError(f"auth file {path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AuthConfigError(f"auth file {path}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _fail(path, "(top level)", "must be an object with api_keys and/or jwt")
    _keys_only(path, "(top level)", document, {"api_keys", "jwt"})
    api_keys = _api_keys(path, document.get("api_keys", []))
    policy = _jwt_policy(path, document["jwt"]) if document.get("jwt") is not None else None
    if not api_keys and policy is None:
        raise _fail(path, "(top level)", "grants no credential: list api_keys or configure jwt")
    return Authenticator(api_keys, policy, source=str(path))
