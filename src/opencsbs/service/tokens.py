"""Local tokens (``auth.mode = local``), made by the operator with ``opencsbs token create``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from opencsbs.auth.local import create_token
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.base import transaction
from opencsbs.db.models import LocalToken
from opencsbs.runtime import Runtime


def create_local_token(runtime: Runtime, project_id: str | None, role: str, user_id: str | None, *,
                       cloud_admin: bool = False, expires_at: datetime | None = None) -> str:
    """A new token's value (shown once: only its digest is stored), valid until ``expires_at`` (naive UTC;
    ``None``: until revoked). Raises ``ValueError`` saying what is wrong with ``project_id``, ``role``,
    ``user_id`` or an ``expires_at`` in the past (see :func:`opencsbs.auth.local.create_token`)."""
    if expires_at is not None and expires_at <= utcnow():
        raise ValueError("the expiry must be in the future")
    with transaction(runtime.sessions) as session:
        return create_token(session, project_id, role, user_id, cloud_admin=cloud_admin, expires_at=expires_at)


def _token_record(row: LocalToken, now: datetime) -> dict[str, Any]:
    expired = row.expires_at is not None and row.expires_at <= now
    return {"id": row.id, "project_id": row.project_id, "user_id": row.user_id, "role": row.role,
            "created_at": wire_ts(row.created_at), "expires_at": wire_ts(row.expires_at),
            "state": "revoked" if row.revoked else "expired" if expired else "valid"}


def list_local_tokens(runtime: Runtime, project_id: str | None = None, *, include_inactive: bool = False
                      ) -> list[dict[str, Any]]:
    """Local tokens (never their values: only digests are stored), oldest first, of ``project_id`` (every
    project when ``None``; cloud-admin tokens have project ``""``); revoked and expired ones only with
    ``include_inactive``. Each: ``id``, ``project_id``, ``user_id``, ``role``, ``created_at``, ``expires_at``
    (``None``: no expiry) and ``state`` (valid | expired | revoked)."""
    now = utcnow()
    query = select(LocalToken).order_by(LocalToken.created_at, LocalToken.id)
    if project_id is not None:
        query = query.where(LocalToken.project_id == project_id)
    with runtime.sessions() as session:
        rows = [_token_record(row, now) for row in session.scalars(query)]
    return rows if include_inactive else [r for r in rows if r["state"] == "valid"]


def revoke_local_token(runtime: Runtime, token_id: str) -> dict[str, Any]:
    """Revoke the token ``token_id`` (the API refuses it from the next request on); revoking twice is a no-op.
    Returns its record. Raises ``LookupError`` for an unknown id."""
    with transaction(runtime.sessions) as session:
        row = session.get(LocalToken, token_id)
        if row is None:
            raise LookupError(token_id)
        row.revoked = True
        session.flush()
        return _token_record(row, utcnow())
