"""Local tokens (``auth.mode = local``), made by the operator with ``opencsbs token create``."""

from __future__ import annotations

from opencsbs.auth.local import create_token
from opencsbs.db.base import transaction
from opencsbs.runtime import Runtime


def create_local_token(runtime: Runtime, project_id: str | None, role: str, user_id: str | None, *,
                       cloud_admin: bool = False) -> str:
    """A new token's value (shown once: only its digest is stored). Raises ``ValueError`` saying what is wrong
    with ``project_id``, ``role`` or ``user_id`` (see :func:`opencsbs.auth.local.create_token`)."""
    with transaction(runtime.sessions) as session:
        return create_token(session, project_id, role, user_id, cloud_admin=cloud_admin)
