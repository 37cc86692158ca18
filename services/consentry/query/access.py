"""Who is asking: staff tokens resolve to an actor and roles from the policy."""

from __future__ import annotations

from dataclasses import dataclass

from consentry.core.policy import Permission, Policy
from consentry.core.problems import Problem


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated staff actor."""

    actor_id: str
    roles: tuple[str, ...]

    def role_for(self, policy: Policy, purpose: str, permission: Permission) -> str | None:
        return policy.roles_may(self.roles, purpose, permission)

    def any_role_with(self, policy: Policy, permission: Permission) -> str | None:
        for role in self.roles:
            found = policy.roles.get(role)
            if found and permission in found.permissions:
                return role
        return None


def caller_from_header(policy: Policy, authorization: str | None) -> Caller:
    """The caller of a bearer token, or a 401 problem."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    name = policy.actor_for_token(token) if token else None
    if name is None:
        raise Problem(401, "unauthorized", "a valid staff token is required")
    return Caller(name, policy.actors[name].roles)
