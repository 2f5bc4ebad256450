"""Local tokens: the embedded auth mode. ``opencsbs token create`` makes them; only SHA-256 digests are stored.

A token is 32 random bytes, URL-safe base64. Looking it up by digest and comparing digests with
``hmac.compare_digest`` means the stored value never leaks through timing or the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.auth.base import ROLES, AuthFailed, Authenticator, Principal
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import LocalToken

#: Which roles a token of each role level carries (a member may also read; an admin may do everything).
IMPLIED_ROLES = {"reader": {"reader"}, "member": {"reader", "member"}, "admin": {"reader", "member", "admin"},
                 "cloud-admin": {"reader", "member", "admin"}}
#: the stored role of a system-scoped local token (``opencsbs token create --cloud-admin``); its project is ""
CLOUD_ADMIN_ROLE = "cloud-admin"


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session, project_id: str, role: str = "member", user_id: str | None = None,
    expires_at: datetime | None = None, cloud_admin: bool = False,
) -> str:
    """Store a new token for ``project_id`` with ``role`` (reader|member|admin) and return it (shown once).

    ``cloud_admin``: a system-scoped admin token instead (``project_id`` must be empty or None, ``role`` is
    ignored), the local counterpart of a Keystone ``system: all`` token; the default ``context_is_admin`` rule lets
    it act on every project. Raises ``ValueError`` for an unknown role, an empty project id (or a project with
    ``cloud_admin``) or a project/user id over 64 characters.
    """
    if cloud_admin:
        if project_id:
            raise ValueError("a cloud-admin token is not scoped to a project (leave --project out)")
        role, project_id = CLOUD_ADMIN_ROLE, ""
    elif role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    elif not project_id or not project_id.strip():
        raise ValueError("project id must not be empty")
    if len(project_id) > 64:
        raise ValueError("project id must be at most 64 characters")
    if user_id is not None and len(user_id) > 64:
        raise ValueError("user id must be at most 64 characters")
    token = secrets.token_urlsafe(32)
    session.add(
        LocalToken(
            token_hash=token_digest(token), project_id=project_id, role=role,
            user_id=user_id or f"local-{role}", expires_at=expires_at,
        )
    )
    return token


class LocalAuthenticator(Authenticator):
    """Validates local tokens against the ``local_tokens`` table.

    ``admin_project_id``: tokens of this project get ``is_admin_project`` (``auth.admin_project_id``).
    """

    def __init__(self, sessions: sessionmaker[Session], admin_project_id: str | None = None):
        self.sessions = sessions
        self.admin_project_id = admin_project_id or None

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthFailed("X-Auth-Token is missing")
        digest = token_digest(token)
        with self.sessions() as session:
            row = session.scalars(select(LocalToken).where(LocalToken.token_hash == digest)).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise AuthFailed("token is not valid")
        if row.revoked or (row.expires_at is not None and row.expires_at <= utcnow()):
            raise AuthFailed("token has expired or was revoked")
        system = row.role == CLOUD_ADMIN_ROLE
        return Principal(
            project_id="" if system else row.project_id, user_id=row.user_id,
            roles=frozenset(IMPLIED_ROLES.get(row.role, ())), system_scope="all" if system else None,
            is_admin_project=not system and row.project_id == self.admin_project_id,
        )
