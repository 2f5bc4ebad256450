"""Authorization: which caller may call which API operation, and who may act on other projects.

Each operation has a rule name (``csbs:<group>:<action>``) and a default rule. A rule is made of checks joined by
``and`` / ``or`` (``and`` binds tighter, as in oslo.policy): ``role:NAME`` (the token carries the role),
``system_scope:all`` (a system-scoped token), ``is_admin_project:True`` (a token of the operator's admin project,
``auth.admin_project_id`` / ``auth.admin_project_name``) and ``rule:context_is_admin``. Defaults: ``reader`` may
read, ``member`` may change its project's resources, ``admin`` may do everything in its own project.

Acting on another project's URL (``/v1/{other}/...``) and ``all_tenants`` need ``context_is_admin``, by default
``role:admin and system_scope:all or role:admin and is_admin_project:True``: the cloud admin the operator
configured, never a project's own admin (source: the OpenStack "consistent and secure default RBAC" goal, which
made system scope the holder of cloud-wide rights). docs/keystone.md documents both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from opencsbs.auth.base import Forbidden, Principal

#: the rule that grants rights over every project
CONTEXT_IS_ADMIN = "context_is_admin"
#: checks other than ``role:NAME`` a rule may use (normalised spelling)
SCOPE_CHECKS = frozenset({"system_scope:all", "is_admin_project:True", f"rule:{CONTEXT_IS_ADMIN}"})


@dataclass(frozen=True)
class Rule:
    """Alternatives (any may hold) of checks (all must hold). ``Rule(())`` grants nobody."""

    any_of: tuple[frozenset[str], ...]

    @classmethod
    def of_roles(cls, *roles: str) -> Rule:
        """Any of ``roles``."""
        return cls(tuple(frozenset({f"role:{r}"}) for r in sorted(roles)))

    @property
    def roles(self) -> frozenset[str]:
        """The roles named by single-role alternatives (what ``role:a or role:b`` grants)."""
        return frozenset(next(iter(a))[5:] for a in self.any_of if len(a) == 1 and next(iter(a)).startswith("role:"))

    def render(self) -> str:
        """The rule as an oslo.policy-style string (``"!"`` for nobody)."""
        return " or ".join(" and ".join(sorted(a)) for a in self.any_of) or "!"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and set(self.any_of) == set(other.any_of)

    def __hash__(self) -> int:
        return hash(frozenset(self.any_of))


READ = Rule.of_roles("reader", "member", "admin")
WRITE = Rule.of_roles("member", "admin")
ADMIN = Rule.of_roles("admin")
CLOUD_ADMIN = Rule((frozenset({f"rule:{CONTEXT_IS_ADMIN}"}),))

#: rule name -> rule
DEFAULT_RULES: dict[str, Rule] = {
    CONTEXT_IS_ADMIN: Rule((frozenset({"role:admin", "system_scope:all"}),
                            frozenset({"role:admin", "is_admin_project:True"}))),
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
    "csbs:all_tenants": CLOUD_ADMIN,
    # retention locks and legal holds (docs/locks.md)
    "csbs:locks:read": READ,
    "csbs:locks:write": ADMIN,
    "csbs:locks:bypass_governance": CLOUD_ADMIN,
    "csbs:holds:write": ADMIN,
    # verify jobs and restore drills (docs/verify.md)
    "csbs:verify:read": READ,
    "csbs:verify:write": WRITE,
    # cancelling a running backup or restore (docs/engine.md)
    "csbs:jobs:write": WRITE,
    # the workers of the deployment, their hosts and jobs (docs/engine.md "Placement")
    "csbs:workers:read": CLOUD_ADMIN,
}


class PolicyFileError(ValueError):
    """The policy file cannot be used (names the file and the rule)."""


def _check(part: str, value: object) -> str:
    """One check, normalised (``role:`` names lower-case); raises :class:`PolicyFileError`."""
    part = part.strip().strip("()").strip()
    if part.startswith("role:") and part[5:].strip() and " " not in part[5:].strip():
        return "role:" + part[5:].strip().lower()
    low = part.replace(" ", "").lower()
    for check in SCOPE_CHECKS:
        if low == check.lower():
            return check
    raise PolicyFileError(f"unsupported check {part!r} in {value!r} (use role:NAME, system_scope:all, "
                          f"is_admin_project:True or rule:{CONTEXT_IS_ADMIN}, joined by 'and' / 'or')")


def parse_rule(value: object) -> Rule:
    """The :class:`Rule` of a policy-file value.

    Accepted values: a list of role names (``[member, admin]``: any of them), an oslo.policy-style string of checks
    joined by ``and`` / ``or`` (``"role:admin and system_scope:all or role:admin and is_admin_project:True"``;
    parentheses around single checks only), ``"@"`` (any authenticated caller: any role of :data:`READ`) or
    ``"!"`` / ``""`` / ``[]`` (nobody). Raises :class:`PolicyFileError` for anything else.
    """
    if isinstance(value, list):
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise PolicyFileError(f"a role list must hold role names, got {value!r}")
        return Rule.of_roles(*{v.strip().lower() for v in value})
    if not isinstance(value, str):
        raise PolicyFileError(f"a rule is a role list or a string, got {value!r}")
    text = value.strip()
    if text in ("", "!"):
        return Rule(())
    if text == "@":
        return READ
    alternatives = []
    for alt in text.split(" or "):
        alternatives.append(frozenset(_check(part, value) for part in alt.split(" and ")))
    return Rule(tuple(dict.fromkeys(alternatives)))


def load_policy_file(path: str | Path) -> dict[str, Rule]:
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
    overrides: dict[str, Rule] = {}
    for name, value in data.items():
        if name not in DEFAULT_RULES:
            raise PolicyFileError(f"policy file {path}: unknown rule {name!r} (known: {', '.join(DEFAULT_RULES)})")
        try:
            overrides[name] = parse_rule(value)
        except PolicyFileError as exc:
            raise PolicyFileError(f"policy file {path}: rule {name}: {exc}") from None
    if f"rule:{CONTEXT_IS_ADMIN}" in {c for a in overrides.get(CONTEXT_IS_ADMIN, Rule(())).any_of for c in a}:
        raise PolicyFileError(f"policy file {path}: rule {CONTEXT_IS_ADMIN} must not refer to itself")
    return overrides


def render_rules(rules: dict[str, Rule]) -> str:
    """The rules as a policy file (YAML, oslo.policy-style strings), e.g. to start an override file from."""
    return "".join(f'"{name}": "{rule.render()}"\n' for name, rule in rules.items())


class Enforcer:
    """Checks a principal against the rules (defaults, overridable per rule)."""

    def __init__(self, overrides: dict[str, Rule] | None = None):
        self.rules = dict(DEFAULT_RULES)
        self.rules.update(overrides or {})

    @classmethod
    def from_file(cls, path: str | Path | None) -> Enforcer:
        """The defaults with ``path``'s overrides (none when ``path`` is None)."""
        return cls(load_policy_file(path) if path else None)

    def allowed(self, principal: Principal, rule: str) -> bool:
        """Whether ``principal`` may perform ``rule`` (unknown rules: ``context_is_admin`` only)."""
        return self._holds(principal, self.rules.get(rule, CLOUD_ADMIN), depth=0)

    def is_cloud_admin(self, principal: Principal) -> bool:
        """Whether ``principal`` may act on every project (the ``context_is_admin`` rule)."""
        return self.allowed(principal, CONTEXT_IS_ADMIN)

    def may_act_on(self, principal: Principal, project_id: str) -> bool:
        """Whether ``principal`` may act on ``project_id``'s resources: its own project, or any as a cloud admin."""
        return (bool(principal.project_id) and principal.project_id == project_id) or self.is_cloud_admin(principal)

    def _holds(self, principal: Principal, rule: Rule, depth: int) -> bool:
        return any(all(self._check(principal, c, depth) for c in alt) for alt in rule.any_of)

    def _check(self, principal: Principal, check: str, depth: int) -> bool:
        if check.startswith("role:"):
            return check[5:] in principal.roles
        if check == "system_scope:all":
            return principal.system_scope == "all"
        if check == "is_admin_project:True":
            return principal.is_admin_project
        if check == f"rule:{CONTEXT_IS_ADMIN}" and depth == 0:
            return self._holds(principal, self.rules[CONTEXT_IS_ADMIN], depth + 1)
        return False

    def enforce(self, principal: Principal, rule: str) -> None:
        """Raise :class:`Forbidden` (403) unless allowed."""
        if not self.allowed(principal, rule):
            raise Forbidden(f"{rule} is not allowed for this token")
