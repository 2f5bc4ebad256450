"""Authorization: which role may call which API operation.

Each operation has a rule name (``csbs:<group>:<action>``) and a default rule, a set of roles any of which
grants it. Defaults: ``reader`` may read, ``member`` may change its project's resources, ``admin`` may do
everything, including ``all_tenants`` and acting on other projects.
"""

from __future__ import annotations

from opencsbs.auth.base import Forbidden, Principal

READ = frozenset({"reader", "member", "admin"})
WRITE = frozenset({"member", "admin"})
ADMIN = frozenset({"admin"})

#: rule name -> roles allowed
DEFAULT_RULES: dict[str, frozenset[str]] = {
    "csbs:providers:read": READ,
    "csbs:resources:check_protectable": READ,
    "csbs:resources:check_restorable": READ,
    "csbs:resources:protect": WRITE,
    "csbs:checkpoint_items:read": READ,
    "csbs:checkpoints:delete": WRITE,
    "csbs:checkpoints:create": WRITE,
    "csbs:restores:create": WRITE,
    "csbs:quotas:read": READ,
    "csbs:policies:read": READ,
    "csbs:policies:write": WRITE,
    "csbs:tags:read": READ,
    "csbs:tags:write": WRITE,
    "csbs:all_tenants": ADMIN,
}


class Enforcer:
    """Checks a principal against the rules (defaults, overridable per rule)."""

    def __init__(self, overrides: dict[str, frozenset[str]] | None = None):
        self.rules = dict(DEFAULT_RULES)
        self.rules.update(overrides or {})

    def allowed(self, principal: Principal, rule: str) -> bool:
        """Whether ``principal`` may perform ``rule`` (unknown rules: admin only)."""
        return bool(principal.roles & self.rules.get(rule, ADMIN))

    def enforce(self, principal: Principal, rule: str) -> None:
        """Raise :class:`Forbidden` (403) unless allowed."""
        if not self.allowed(principal, rule):
            raise Forbidden(f"{rule} is not allowed for this token")
