"""The authentication seam: an :class:`Authenticator` turns an ``X-Auth-Token`` into a :class:`Principal`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError

ROLES = ("reader", "member", "admin")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's project, user and roles (lower-case).

    ``system_scope``: ``"all"`` for a system-scoped token (Keystone ``"system": {"all": true}``, or a local token
    made with ``opencsbs token create --cloud-admin``); its ``project_id`` is then ``""``. ``is_admin_project``:
    the token is scoped to the operator's admin project (``auth.admin_project_id`` / ``auth.admin_project_name``).
    Neither grants anything by itself: the ``context_is_admin`` rule of :mod:`opencsbs.auth.rules` decides who may
    act on other projects. ``auth_token`` is kept only to pass on to the cloud (keystone mode); it never reaches
    logs or errors.
    """

    project_id: str
    user_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    auth_token: str | None = field(default=None, repr=False)
    system_scope: str | None = None
    is_admin_project: bool = False

    def cloud_token(self, project_id: str) -> str | None:
        """The caller's token for cloud calls on ``project_id``'s resources: only when the token is scoped to that
        project (a cloud admin acting on another project goes through the service user, with project filters)."""
        return self.auth_token if self.project_id == project_id else None

    @classmethod
    def operator(cls, project_id: str, who: str, roles: tuple[str, ...] = ROLES) -> Principal:
        """The service acting for itself on ``project_id``, with no user token (drivers use the service's
        credentials): ``who`` names the acting part in logs (``"opencsbs-cli"``, ``"opencsbs-scheduler"``);
        ``roles`` default to every role of :data:`ROLES`."""
        return cls(project_id=project_id, user_id=who, roles=frozenset(roles))


class AuthFailed(CSBSError):
    """401: the token is missing, unknown, expired or revoked."""

    def __init__(self, why: str = "token missing or invalid"):
        super().__init__(codes.AUTH_FAILED, why)


class Forbidden(CSBSError):
    """403: authenticated, but not allowed."""

    def __init__(self, why: str):
        super().__init__(codes.FORBIDDEN, why)


class Authenticator(ABC):
    """Validates tokens. Implementations must be thread-safe."""

    @abstractmethod
    def authenticate(self, token: str | None) -> Principal:
        """The principal of ``token``; raises :class:`AuthFailed` (never reveals why in detail)."""

    def close(self) -> None:
        """Release resources (default: nothing)."""
