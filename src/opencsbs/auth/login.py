"""Keystone password login for browsers: ``auth.mode = keystone`` only.

A browser page served by opencsbs cannot ask Keystone itself (Keystone sends no CORS headers by default, and
the console makes no request to anything but opencsbs), so ``POST /opencsbs/v1/auth/tokens`` hands the user
name, password and project to :func:`password_token`, which asks Keystone (``POST /v3/auth/tokens``, password
method, project scope) through keystoneauth1 and returns the project-scoped token. Nothing is stored; the
password is never logged. Source: Keystone API v3, "Password authentication with scoped authorization".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from opencsbs.auth.base import AuthFailed
from opencsbs.config import AuthSettings
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError


@dataclass(frozen=True)
class IssuedToken:
    """A project-scoped Keystone token: ``id`` (the X-Auth-Token value), its project and expiry (aware UTC)."""

    id: str
    project_id: str
    project_name: str
    user_id: str
    expires_at: datetime | None


def password_token(settings: AuthSettings, username: str, password: str, project: str,
                   domain: str = "Default") -> IssuedToken:
    """A token of ``username`` in ``domain`` scoped to ``project`` (a name in ``domain``, or an id).

    Raises :class:`AuthFailed` (401) when Keystone refuses the credentials or the scope, and 503 CSBS.9999 when
    Keystone cannot be reached.
    """
    url = (settings.keystone_url or "").rstrip("/")
    if not url.endswith("/v3"):
        url += "/v3"
    # the project by name in the domain first, then as an id
    for scope in ({"project_name": project, "project_domain_name": domain}, {"project_id": project}):
        plugin = v3.Password(auth_url=url, username=username, password=password, user_domain_name=domain, **scope)
        try:
            access = plugin.get_access(ks_session.Session(timeout=settings.keystone_timeout))
        except (ks_exc.Unauthorized, ks_exc.BadRequest, ks_exc.NotFound):
            continue
        except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.RequestTimeout, ks_exc.DiscoveryFailure,
                ks_exc.HttpError) as exc:
            raise CSBSError(codes.IDENTITY_UNAVAILABLE, f"asking Keystone ({type(exc).__name__})") from exc
        if access.project_id:
            return IssuedToken(access.auth_token, access.project_id, access.project_name or "", access.user_id,
                               access.expires)
    raise AuthFailed("Keystone refused the user name, password or project")
