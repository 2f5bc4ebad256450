"""``POST /v1/{project_id}/providers/{provider_id}/resources/action``: ``check_protectable`` and
``check_restorable``; ``POST .../resources/{resource_id}/action``: ``protect`` (a manual backup).

Sources: resource_management/querying_the_backup_capability_of_a_resource.rst,
querying_the_restoration_capability_of_a_resource.rst, creating_a_backup_for_a_resource.rst.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fastapi import Path

from opencsbs.api.deps import Caller, check_provider, project_caller
from opencsbs.api.schemas.backups import CheckpointEnvelope, ProtectRequest
from opencsbs.api.schemas.common import ERRORS
from opencsbs.api.schemas.resources import ProtectableResponse, ResourceActionRequest
from opencsbs.core.errors import invalid
from opencsbs.core.facts import SERVER
from opencsbs.service import backups, protectable, restores

router = APIRouter(tags=["resources"], responses=ERRORS)


@router.post(
    "/v1/{project_id}/providers/{provider_id}/resources/action",
    response_model=ProtectableResponse,
    response_model_exclude_none=True,
    summary="Query the backup (check_protectable) or restore (check_restorable) capability of resources",
)
def resource_action(
    body: ResourceActionRequest,
    caller: Caller = Depends(project_caller),
    _provider: str = Depends(check_provider),
) -> dict:
    """One ``check_resp`` per requested item, in request order. 401/403 before anything else; then 400
    CSBS.9001 for an unknown provider, a malformed body, a missing or empty ``check_protectable``/
    ``check_restorable`` (or both at once) or a batch over ``batch_limit``."""
    if body.check_protectable is not None and body.check_restorable is not None:
        raise invalid("give either check_protectable or check_restorable")
    limit = caller.runtime.settings.batch_limit
    if body.check_restorable is not None:
        caller.enforce("csbs:resources:check_restorable")
        if len(body.check_restorable) > limit:
            raise invalid(f"check_restorable holds more than {limit} items")
        requests = [
            restores.RestorePlan(p.checkpoint_item_id, p.target.resource_id, p.target.resource_type,
                                    restores.mapping_of(p.target.volumes))
            for p in body.check_restorable
        ]
        verdicts = restores.check_restorable(caller.runtime, caller.principal, caller.project_id, requests)
        return {"restorable": [v.to_wire() for v in verdicts]}
    if body.check_protectable is None:
        raise invalid("check_protectable or check_restorable is required")
    caller.enforce("csbs:resources:check_protectable")
    if len(body.check_protectable) > limit:
        raise invalid(f"check_protectable holds more than {limit} items")
    items = [(p.resource_id, p.resource_type) for p in body.check_protectable]
    verdicts = protectable.check_protectable(caller.runtime, caller.principal, caller.project_id, items)
    return {"protectable": [v.to_wire() for v in verdicts]}


@router.post(
    "/v1/{project_id}/providers/{provider_id}/resources/{resource_id}/action",
    response_model=CheckpointEnvelope,
    summary="Create a backup of a resource (protect)",
)
def protect(
    body: ProtectRequest,
    resource_id: str = Path(..., min_length=1, max_length=64),
    _provider: str = Depends(check_provider),
    caller: Caller = Depends(project_caller),
) -> dict:
    """Start a manual backup; answers the ``checkpoint`` (status ``protecting``) at once. The server must pass
    check_protectable (its code otherwise); CSBS.9006 when a quota is used up."""
    caller.enforce("csbs:resources:protect")
    p = body.protect
    checkpoint = backups.create_backup(
        caller.runtime, caller.principal, caller.project_id, resource_id,
        name=p.backup_name, description=p.description, incremental=p.incremental,
        tags=[t.model_dump() for t in p.tags] if p.tags is not None else None,
        extra_info=p.extra_info, resource_type=p.resource_type or SERVER,
    )
    return {"checkpoint": checkpoint}
