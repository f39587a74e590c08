"""Who is calling: the principal of the request being served.

The API surface's auth interceptor sets it for the duration of a call; the core
reads it where it records who did something (event metadata, the generator's
fair share, quotas). Background work (the learning loop, sinks) has none.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

ROLES = ("viewer", "agent", "operator", "admin")
"""Each role includes the ones before it."""


@dataclass(frozen=True)
class Principal:
    name: str
    """The API key's principal or the JWT's ``sub``; "anonymous" when auth is off."""
    authenticated_by: str
    """"api_key", "jwt", or "none" (no auth file: loopback use)."""
    roles: frozenset[str] = frozenset()
    claims: dict = field(default_factory=dict, compare=False, hash=False)
    """A JWT's verified claims (empty for API keys)."""
    client_key: str = ""
    """Key of the self-declared caller (x-client-id, else address), used only when anonymous."""

    @property
    def key(self) -> str:
        """What limits and shares are counted by: the verified name, else the client key."""
        if self.authenticated_by == "none":
            return self.client_key or "anonymous"
        return f"principal:{self.name}"

    def has_role(self, role: str) -> bool:
        """True when one of the principal's roles is ``role`` or a role above it."""
        rank = ROLES.index(role)
        return any(r in ROLES and ROLES.index(r) >= rank for r in self.roles)


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("poet_principal", default=None)


def current() -> Principal | None:
    """The principal of the call being served, if any."""
    return _current.get()


def set_current(principal: Principal | None) -> None:
    """Set the principal for the rest of the current task (one call)."""
    _current.set(principal)


def principal_metadata() -> dict[str, str]:
    """{"principal": name} for an event appended by the current call; {} outside one."""
    principal = _current.get()
    return {"principal": principal.name} if principal is not None else {}
