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

    ``auth_token`` is kept only to pass on to the cloud (keystone mode); it never reaches logs or errors.
    """

    project_id: str
    user_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    auth_token: str | None = field(default=None, repr=False)

    @property
    def is_admin(self) -> bool:
        """Admins may act across projects and use ``all_tenants``."""
        return "admin" in self.roles


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
