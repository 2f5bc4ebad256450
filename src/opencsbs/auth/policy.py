"""Authorization: which role may call which API operation.

Each operation has a rule name (``csbs:<group>:<action>``) and a default rule, a set of roles any of which
grants it. Defaults: ``reader`` may read, ``member`` may change its project's resources, ``admin`` may do
everything, including ``all_tenants`` and acting on other projects.
"""

from __future__ import annotations

from pathlib import Path

import yaml

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


class PolicyFileError(ValueError):
    """The policy file cannot be used (names the file and the rule)."""


def parse_rule(value: object) -> frozenset[str]:
    """The roles a rule value grants.

    Accepted values: a list of role names (``[member, admin]``), an oslo.policy-style string made of ``role:``
    checks joined by ``or`` (``"role:member or role:admin"``), ``"@"`` (any authenticated caller: every role of
    :data:`READ`) or ``"!"`` / ``""`` / ``[]`` (nobody). Raises :class:`PolicyFileError` for anything else.
    """
    if isinstance(value, list):
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise PolicyFileError(f"a role list must hold role names, got {value!r}")
        return frozenset(v.strip().lower() for v in value)
    if not isinstance(value, str):
        raise PolicyFileError(f"a rule is a role list or a string, got {value!r}")
    text = value.strip()
    if text in ("", "!"):
        return frozenset()
    if text == "@":
        return READ
    roles = set()
    for part in text.split(" or "):
        part = part.strip().strip("()").strip()
        if not part.startswith("role:") or not part[5:].strip() or " " in part[5:].strip():
            raise PolicyFileError(f"unsupported check {part!r} in {value!r} (use role:NAME joined by 'or')")
        roles.add(part[5:].strip().lower())
    return frozenset(roles)


def load_policy_file(path: str | Path) -> dict[str, frozenset[str]]:
    """Rule overrides from a YAML mapping ``rule name -> rule value`` (see :func:`parse_rule`).

    Unknown rule names are refused (a typo must not silently leave the default in force). Raises
    :class:`PolicyFileError`.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyFileError(f"policy file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyFileError(f"policy file {path} must hold a mapping of rule names to rules")
    overrides = {}
    for name, value in data.items():
        if name not in DEFAULT_RULES:
            raise PolicyFileError(f"policy file {path}: unknown rule {name!r} (known: {', '.join(DEFAULT_RULES)})")
        try:
            overrides[name] = parse_rule(value)
        except PolicyFileError as exc:
            raise PolicyFileError(f"policy file {path}: rule {name}: {exc}") from None
    return overrides


def render_rules(rules: dict[str, frozenset[str]]) -> str:
    """The rules as a policy file (YAML, oslo.policy-style strings), e.g. to start an override file from."""
    lines = []
    for name, roles in rules.items():
        value = " or ".join(f"role:{r}" for r in sorted(roles)) or "!"
        lines.append(f'"{name}": "{value}"')
    return "\n".join(lines) + "\n"


class Enforcer:
    """Checks a principal against the rules (defaults, overridable per rule)."""

    def __init__(self, overrides: dict[str, frozenset[str]] | None = None):
        self.rules = dict(DEFAULT_RULES)
        self.rules.update(overrides or {})

    @classmethod
    def from_file(cls, path: str | Path | None) -> Enforcer:
        """The defaults with ``path``'s overrides (none when ``path`` is None)."""
        return cls(load_policy_file(path) if path else None)

    def allowed(self, principal: Principal, rule: str) -> bool:
        """Whether ``principal`` may perform ``rule`` (unknown rules: admin only)."""
        return bool(principal.roles & self.rules.get(rule, ADMIN))

    def enforce(self, principal: Principal, rule: str) -> None:
        """Raise :class:`Forbidden` (403) unless allowed."""
        if not self.allowed(principal, rule):
            raise Forbidden(f"{rule} is not allowed for this token")
