"""``/v1/{project_id}/policies[/{policy_id}]``: create, list, show, update, delete backup policies; and
``POST /v1/{project_id}/providers/{provider_id}/checkpoints``: execute a policy now.

Source: backup_policy_management/*.rst, backup_management/executing_a_backup_policy.rst; shapes and decisions in
``service.policies``, ``service.policy_runs`` and docs/policies.md.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from opencsbs.api.deps import Caller, check_provider, project_caller
from opencsbs.api.schemas.common import ERRORS, MAX_QUERY_INT
from opencsbs.api.schemas.backups import CheckpointEnvelope
from opencsbs.api.schemas.policies import PolicyEnvelope, PolicyList
from opencsbs.core.errors import invalid
from opencsbs.service import policies, policy_runs
from opencsbs.wire.policies import CheckpointCreateRequest, PolicyCreateRequest, PolicyUpdateRequest

router = APIRouter(tags=["policies"], responses=ERRORS)

PolicyId = Path(..., min_length=1, max_length=64, description="Backup policy ID")


@router.post("/v1/{project_id}/policies", response_model=PolicyEnvelope, response_model_exclude_unset=True,
             summary="Create a backup policy")
def create_policy(body: PolicyCreateRequest, caller: Caller = Depends(project_caller)) -> dict:
    """200 ``{"policy": policy_resp}`` (status ``suspended``; numbers of ``operation_definition`` as strings)."""
    caller.enforce("csbs:policies:write")
    spec = body.policy.model_dump(exclude_unset=True)
    return {"policy": policies.create_policy(caller.runtime, caller.principal, caller.project_id, spec)}


def _bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise invalid(f"{name} must be true or false")


@router.get("/v1/{project_id}/policies", response_model=PolicyList, response_model_exclude_unset=True,
            summary="List backup policies")
def list_policies(
    request: Request,
    caller: Caller = Depends(project_caller),
    marker: str | None = Query(None, max_length=64),
    limit: int | None = Query(None, ge=1, le=MAX_QUERY_INT),
    sort: str | None = Query(None, max_length=255),
    name: str | None = Query(None, max_length=255),
    status: str | None = Query(None, max_length=16),
    offset: int | None = Query(None, ge=0, le=MAX_QUERY_INT),
    all_tenants: str | None = Query(None, max_length=8),
) -> dict:
    """``{"policies": [...]}`` newest first unless ``sort`` says otherwise; ``policies_links`` with a ``next``
    link when more remain."""
    caller.enforce("csbs:policies:read")
    everyone = _bool(all_tenants, "all_tenants")
    if everyone:
        caller.enforce("csbs:all_tenants")
    query = policies.ListQuery(marker, limit, sort, name, status, offset, everyone)
    page, next_marker = policies.list_policies(caller.runtime, caller.principal, caller.project_id, query)
    body: dict = {"policies": page}
    if next_marker is not None:
        base = str(request.base_url).rstrip("/")
        body["policies_links"] = _next_link(base, caller.project_id, next_marker, query)
    return body


@router.get("/v1/{project_id}/policies/{policy_id}", response_model=PolicyEnvelope,
            response_model_exclude_unset=True, summary="Show a backup policy")
def show_policy(policy_id: str = PolicyId, caller: Caller = Depends(project_caller)) -> dict:
    """``{"policy": policy_resp}``; 404 CSBS.3000 when unknown."""
    caller.enforce("csbs:policies:read")
    return {"policy": policies.show_policy(caller.runtime, caller.principal, caller.project_id, policy_id)}


@router.put("/v1/{project_id}/policies/{policy_id}", response_model=PolicyEnvelope,
            response_model_exclude_unset=True, summary="Update a backup policy")
def update_policy(body: PolicyUpdateRequest, policy_id: str = PolicyId,
                  caller: Caller = Depends(project_caller)) -> dict:
    """200 ``{"policy": policy_resp}`` with the fields given changed."""
    caller.enforce("csbs:policies:write")
    spec = body.policy.model_dump(exclude_unset=True)
    return {"policy": policies.update_policy(caller.runtime, caller.principal, caller.project_id, policy_id, spec)}


@router.delete("/v1/{project_id}/policies/{policy_id}", response_class=Response,
               summary="Delete a backup policy")
def delete_policy(policy_id: str = PolicyId, caller: Caller = Depends(project_caller)) -> Response:
    """200 with an empty body; the policy's backups stay."""
    caller.enforce("csbs:policies:write")
    policies.delete_policy(caller.runtime, caller.principal, caller.project_id, policy_id)
    return Response(status_code=200)


@router.post("/v1/{project_id}/providers/{provider_id}/checkpoints", response_model=CheckpointEnvelope,
             summary="Execute a backup policy")
def execute_policy(body: CheckpointCreateRequest, _provider: str = Depends(check_provider),
                   caller: Caller = Depends(project_caller)) -> dict:
    """200 ``{"checkpoint": checkpoint_resp}`` (status ``protecting``). Refusals: CSBS.3000, 1001, 6030, 2004,
    6032 (see ``service.policy_runs``)."""
    caller.enforce("csbs:checkpoints:create")
    cp = body.checkpoint
    return {"checkpoint": policy_runs.execute(
        caller.runtime, caller.principal, caller.project_id, cp.plan_id,
        resources=cp.parameters.resources, auto_trigger=cp.parameters.auto_trigger,
    )}


def _next_link(base: str, project_id: str, marker: str, query: policies.ListQuery) -> list[dict]:
    """``policies_links`` for the next page."""
    params: dict = {"marker": marker}
    if query.limit is not None:
        params["limit"] = query.limit
    for key in ("sort", "name", "status"):
        if getattr(query, key) is not None:
            params[key] = getattr(query, key)
    if query.all_tenants:
        params["all_tenants"] = "true"
    return [{"rel": "next", "href": f"{base}/v1/{project_id}/policies?{urlencode(params)}"}]
