"""The one-line notice for deployments upgraded from "admin anywhere is admin everywhere".

Before the ``context_is_admin`` rule, any token with the ``admin`` role acted on every project. Now a project's
admin acts in its own project only; cross-project rights come from a system-scoped token or the configured admin
project (docs/keystone.md). ``opencsbs serve`` prints this notice at start-up when a deployment may have relied on
the old behaviour and configured nothing of the new one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.auth.rules import CONTEXT_IS_ADMIN, DEFAULT_RULES, Enforcer
from opencsbs.config import Settings
from opencsbs.db.models import LocalToken


def cross_project_notice(settings: Settings, sessions: sessionmaker[Session], enforcer: Enforcer) -> str | None:
    """The notice (one line) or None when nothing needs saying.

    Nothing is said when the policy file sets ``context_is_admin`` or an admin project is configured. In local
    mode it is said only when live ``admin`` tokens exist and no cloud-admin token does.
    """
    if enforcer.rules.get(CONTEXT_IS_ADMIN) != DEFAULT_RULES[CONTEXT_IS_ADMIN]:
        return None
    if settings.auth.admin_project_id or settings.auth.admin_project_name:
        return None
    if settings.auth.mode == "keystone":
        return ("notice: only system-scoped Keystone tokens (system: all) with the admin role act on other projects; "
                "set auth.admin_project_name (e.g. admin) to let that project's admins do so too (docs/keystone.md)")
    with sessions() as session:
        roles = set(session.scalars(select(LocalToken.role).where(LocalToken.revoked.is_(False)).distinct()))
    if "admin" in roles and "cloud-admin" not in roles:
        return ("notice: local admin tokens now act in their own project only; for cross-project access run "
                "'opencsbs token create --cloud-admin' or set auth.admin_project_id (docs/keystone.md)")
    return None
