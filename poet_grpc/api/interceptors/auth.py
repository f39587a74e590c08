"""Authentication and role checks, before anything else looks at a call.

Clients send ``authorization: Bearer <API key or JWT>`` (gRPC metadata, or the
HTTP header through the gateway, which passes it on). Each PoetService method
needs a role; each role includes the ones before it:

    viewer    ListVersions, GetVersion, ListEvents, StreamEvents, ListDomains
    agent     + Enhance, EnhanceExternal, EnhanceTranspiled, SubmitFeedback, PublishEvents
    operator  + ActivateVersion, DeprecateVersion, ListDeadLetters, ReplayDeadLetters
    admin     everything, including any method not listed here

EnhanceTranspiled also needs a JWT whose ``service`` claim is
``aitomatic_transpilation``, whatever the role. Health, probes and reflection
need no credential. Without an auth file every caller is the anonymous admin
(the loopback Quick start); the server refuses to start that way on another
address unless told --insecure.

Failures: UNAUTHENTICATED (HTTP 401, ``www-authenticate: Bearer``) for a missing
or bad credential, PERMISSION_DENIED (403) for a good one without the role; the
ErrorInfo reason says which check failed, never which keys exist.
"""

from __future__ import annotations

import grpc

from poet_grpc.core.errors import PermissionDenied, Unauthenticated
from poet_grpc.core.principal import Principal, set_current
from poet_grpc.api.interceptors._credentials import Authenticator
from poet_grpc.api.interceptors._wrap import check_first
from poet_grpc.api.interceptors.rate_limit import client_key

__all__ = ["AuthInterceptor", "OPEN_PREFIXES", "required_role"]

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/poet.v1.ProbeService/", "/grpc.reflection.")
"""Methods anyone may call: probes must work without secrets, and reflection
describes only the public contract (the same as /openapi.json)."""

_SERVICE = "/poet.v1.PoetService/"
ROLE_OF_METHOD = {
    **dict.fromkeys(("ListVersions", "GetVersion", "ListEvents", "StreamEvents", "ListDomains"), "viewer"),
    **dict.fromkeys(("Enhance", "EnhanceExternal", "EnhanceTranspiled", "SubmitFeedback", "PublishEvents"), "agent"),
    **dict.fromkeys(("ActivateVersion", "DeprecateVersion", "ListDeadLetters", "ReplayDeadLetters"), "operator"),
}
TRANSPILATION_METHOD = _SERVICE + "EnhanceTranspiled"
TRANSPILATION_SERVICE = "aitomatic_transpilation"


def required_role(method: str) -> str:
    """The least role that may call ``method`` (admin for anything unlisted)."""
    if method.startswith(_SERVICE):
        return ROLE_OF_METHOD.get(method[len(_SERVICE):], "admin")
    return "admin"


def _bearer(metadata) -> str | None:
    """The credential of the first authorization entry; None when there is none."""
    for key, value in metadata or ():
        if key.lower() != "authorization" or isinstance(value, bytes):
            continue
        scheme, _, credential = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthenticated("the authorization header must be 'Bearer <API key or JWT>'",
                                  reason="CREDENTIAL_MALFORMED")
        return credential.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Sets the call's Principal (poet_grpc.core.principal) or refuses the call."""

    def __init__(self, authenticator: Authenticator | None):
        self._authenticator = authenticator

    def authorize(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Set the call's principal (for the audit line even when it lacks the role), or raise."""
        metadata = context.invocation_metadata()
        if self._authenticator is None:
            set_current(Principal("anonymous", "none", frozenset({"admin"}),
                                  client_key=client_key(metadata, context.peer())))
            return
        credential = _bearer(metadata)
        if credential is None:
            raise Unauthenticated("this call needs a credential: send 'authorization: Bearer <API key or JWT>'",
                                  reason="CREDENTIAL_MISSING")
        principal = self._authenticator.authenticate(credential)
        set_current(principal)
        role = required_role(method)
        if not principal.has_role(role):
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} needs the {role} role",
                                   reason="ROLE_REQUIRED", metadata={"required_role": role})
        if method == TRANSPILATION_METHOD and (
            principal.authenticated_by != "jwt" or principal.claims.get("service") != TRANSPILATION_SERVICE
        ):
            raise PermissionDenied(f"EnhanceTranspiled needs a JWT with the claim service={TRANSPILATION_SERVICE}",
                                   reason="SERVICE_CLAIM_REQUIRED", metadata={"required_service": TRANSPILATION_SERVICE})

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler

        # Each call runs in its own task with its own copy of the context, so the
        # principal set here is seen by the whole call (and by the audit line
        # written around it) and by nothing else.
        return check_first(handler, lambda request, context: self.authorize(method, context))
