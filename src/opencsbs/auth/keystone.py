"""Keystone tokens: ``auth.mode = keystone``.

Every ``X-Auth-Token`` is validated with ``GET /v3/auth/tokens`` (``X-Subject-Token``) under the service user's
own token (keystoneauth1 keeps that one fresh). The answer's project, user and roles become the
:class:`~opencsbs.auth.base.Principal`. Source: Keystone API v3, "Validate and show information for token".

Outcomes are cached in a bounded TTL cache keyed by the token's SHA-256 digest: a valid token for at most
``auth.cache_seconds`` and never past its ``expires_at``; a refused token for ``cache_seconds`` too (so a flood
of bad tokens does not become a flood of Keystone calls). A token revoked in Keystone is therefore refused once
its cache entry lapses. Keystone unreachable, or refusing the service user, answers 503 (CSBS.9999) instead of
refusing the caller.

The caller's token is kept in ``Principal.auth_token`` (the OpenStack driver acts with it); it is never logged:
keystoneauth1 logs only its digest, and no error message of this module carries it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import TTLCache
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from opencsbs.auth.base import AuthFailed, Authenticator, Principal
from opencsbs.config import AuthSettings
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError

log = logging.getLogger("opencsbs.auth.keystone")

#: what a token may look like before it is sent anywhere: printable ASCII without spaces, bounded length
TOKEN_SHAPE = re.compile(r"[\x21-\x7e]{1,8192}")


class IdentityUnavailable(CSBSError):
    """503: Keystone cannot be reached or refuses the service user; the caller's token was not judged."""

    def __init__(self, why: str):
        super().__init__(codes.IDENTITY_UNAVAILABLE, why)


@dataclass(frozen=True)
class _Entry:
    principal: Principal | None  # None: refused
    expires_at: datetime | None  # the token's own expiry (naive UTC)


def _parse_expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def principal_from_token_body(body: dict, token: str, settings: AuthSettings | None = None,
                              ) -> tuple[Principal, datetime | None]:
    """The principal of a ``GET /v3/auth/tokens`` answer (``{"token": {...}}``) and the token's expiry.

    A system-scoped token (``"system": {"all": true}``) gives ``system_scope="all"`` and project ``""``; a project
    token matching ``settings.admin_project_id`` or ``admin_project_name`` (in ``admin_project_domain``, compared
    by name or id) gives ``is_admin_project``. Keystone's own ``is_admin_project`` field is not trusted: it is true
    whenever Keystone has no admin project configured. Raises :class:`AuthFailed` for an unscoped or
    domain-scoped token.
    """
    data = body.get("token") or {}
    project = data.get("project") or {}
    user = data.get("user") or {}
    system = data.get("system") or {}
    roles = frozenset(str(r.get("name", "")).lower() for r in data.get("roles") or [] if r.get("name"))
    if not project.get("id"):
        if isinstance(system, dict) and system.get("all") is True:
            principal = Principal(project_id="", user_id=str(user.get("id", "")), roles=roles, auth_token=token,
                                  system_scope="all")
            return principal, _parse_expiry(data.get("expires_at"))
        raise AuthFailed("the token is not scoped to a project")
    principal = Principal(project_id=project["id"], user_id=str(user.get("id", "")), roles=roles, auth_token=token,
                          is_admin_project=settings is not None and _is_admin_project(project, settings))
    return principal, _parse_expiry(data.get("expires_at"))


def _is_admin_project(project: dict, settings: AuthSettings) -> bool:
    if settings.admin_project_id and project.get("id") == settings.admin_project_id:
        return True
    if not settings.admin_project_name or project.get("name") != settings.admin_project_name:
        return False
    domain = project.get("domain") or {}
    return settings.admin_project_domain in (domain.get("name"), domain.get("id"))


class KeystoneAuthenticator(Authenticator):
    """Validates Keystone v3 tokens with a service user (``auth.keystone_url``, ``auth.service_*``).

    ``session``: an existing keystoneauth1 session carrying the service user's auth (tests, or to share one).
    Raises ``ValueError`` at construction when the settings lack the URL or the service credentials.
    """

    def __init__(self, settings: AuthSettings, session: ks_session.Session | None = None):
        if not settings.keystone_url:
            raise ValueError("auth.keystone_url is required in keystone mode")
        self.url = settings.keystone_url.rstrip("/")
        if not self.url.endswith("/v3"):
            self.url += "/v3"
        if session is None:
            if not (settings.service_username and settings.service_password and settings.service_project_name):
                raise ValueError(
                    "auth.service_username, auth.service_password and auth.service_project_name are required "
                    "in keystone mode"
                )
            plugin = v3.Password(
                auth_url=self.url,
                username=settings.service_username,
                password=settings.service_password,
                project_name=settings.service_project_name,
                user_domain_name=settings.service_user_domain,
                project_domain_name=settings.service_project_domain,
            )
            session = ks_session.Session(auth=plugin, timeout=settings.keystone_timeout)
        self.session = session
        self.settings = settings
        self.cache_seconds = max(0, settings.cache_seconds)
        self._cache: TTLCache[str, _Entry] | None = (
            TTLCache(maxsize=max(1, settings.cache_size), ttl=self.cache_seconds, timer=time.monotonic)
            if self.cache_seconds > 0 else None
        )
        self._lock = threading.Lock()

    # -- the seam ----------------------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthFailed("X-Auth-Token is missing")
        if not TOKEN_SHAPE.fullmatch(token):
            raise AuthFailed("token is not valid")
        key = hashlib.sha256(token.encode("ascii")).hexdigest()
        entry = self._cached(key)
        if entry is None:
            entry = self._validate(token)
            self._store(key, entry)
        if entry.principal is None:
            raise AuthFailed("token is not valid, has expired or was revoked")
        if entry.expires_at is not None and entry.expires_at <= _utcnow():
            raise AuthFailed("token has expired")
        return entry.principal

    def close(self) -> None:
        self.session.session.close()

    # -- cache -------------------------------------------------------------------------------------------------

    def _cached(self, key: str) -> _Entry | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(key)

    def _store(self, key: str, entry: _Entry) -> None:
        if self._cache is None:
            return
        with self._lock:
            self._cache[key] = entry

    # -- Keystone ----------------------------------------------------------------------------------------------

    def _validate(self, token: str) -> _Entry:
        try:
            resp = self.session.get(
                self.url + "/auth/tokens?nocatalog",
                headers={"X-Subject-Token": token},
                authenticated=True,
                raise_exc=False,
            )
        except ks_exc.Unauthorized:
            log.error("Keystone refused the service user of opencsbs (check auth.service_* settings)")
            raise IdentityUnavailable("token validation (service user refused)") from None
        except (ks_exc.ConnectFailure, ks_exc.ConnectionError, ks_exc.DiscoveryFailure, ks_exc.RequestTimeout) as exc:
            log.warning("Keystone at %s cannot be reached: %s", self.url, type(exc).__name__)
            raise IdentityUnavailable("token validation (identity service unreachable)") from None
        except ks_exc.ClientException as exc:
            log.warning("Keystone token validation failed: %s", type(exc).__name__)
            raise IdentityUnavailable("token validation") from None
        if resp.status_code in (401, 404):
            # 404: unknown, expired or revoked; 401 after the session's own re-authentication: also the subject
            return _Entry(None, None)
        if resp.status_code == 403:
            log.error("Keystone denied token validation to the service user (it needs the 'service' role)")
            raise IdentityUnavailable("token validation (service user not allowed)")
        if resp.status_code != 200:
            log.warning("Keystone answered %s to a token validation", resp.status_code)
            raise IdentityUnavailable("token validation")
        try:
            body = resp.json()
        except ValueError:
            raise IdentityUnavailable("token validation (unreadable answer)") from None
        try:
            principal, expires_at = principal_from_token_body(body, token, self.settings)
        except AuthFailed:
            return _Entry(None, None)
        return _Entry(principal, expires_at)
