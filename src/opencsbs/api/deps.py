"""Request dependencies: the runtime, the authenticated caller, the project scope and the provider check."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader

from opencsbs.auth.base import Forbidden, Principal
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.runtime import Runtime

token_header = APIKeyHeader(name="X-Auth-Token", auto_error=False, description="A local or Keystone token")


def get_runtime(request: Request) -> Runtime:
    """The process's :class:`Runtime`."""
    return request.app.state.runtime


def get_principal(
    request: Request, token: str | None = Depends(token_header), runtime: Runtime = Depends(get_runtime)
) -> Principal:
    """Authenticate ``X-Auth-Token`` (401 when missing or invalid)."""
    principal = runtime.authenticator.authenticate(token)
    request.state.principal = principal
    return principal


@dataclass(frozen=True)
class Caller:
    """An authorised call on ``project_id``'s resources."""

    principal: Principal
    project_id: str
    runtime: Runtime

    def enforce(self, rule: str) -> None:
        """403 unless the principal's roles allow ``rule``."""
        self.runtime.enforcer.enforce(self.principal, rule)


def project_caller(
    project_id: str = Path(..., min_length=1, max_length=64, description="Project ID"),
    principal: Principal = Depends(get_principal),
    runtime: Runtime = Depends(get_runtime),
) -> Caller:
    """The caller, scoped to the URL's project: 403 when the token is of another project, unless the
    ``context_is_admin`` rule (a cloud admin, as the operator configured it) allows the principal."""
    if not runtime.enforcer.may_act_on(principal, project_id):
        raise Forbidden("the token is not scoped to this project")
    return Caller(principal, project_id, runtime)


def require(rule: str):
    """A dependency: the project caller, after enforcing ``rule``."""

    def _dep(caller: Caller = Depends(project_caller)) -> Caller:
        caller.enforce(rule)
        return caller

    return _dep


def check_provider(
    provider_id: str = Path(..., max_length=64, description="Backup provider ID (fixed for CSBS)"),
    runtime: Runtime = Depends(get_runtime),
) -> str:
    """400 CSBS.9001 unless ``provider_id`` is the CSBS provider."""
    if provider_id != runtime.settings.provider_id:
        raise CSBSError(codes.INVALID_PARAMETER, message="provider invalid")
    return provider_id
