"""``POST /v1/{project_id}/providers/{provider_id}/resources/action``: ``check_protectable``.

Source: resource_management/querying_the_backup_capability_of_a_resource.rst.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from opencsbs.api.deps import Caller, check_provider, project_caller
from opencsbs.api.schemas.common import ERRORS
from opencsbs.api.schemas.resources import ProtectableResponse, ResourceActionRequest
from opencsbs.core.errors import invalid
from opencsbs.service import protection

router = APIRouter(tags=["resources"], responses=ERRORS)


@router.post(
    "/v1/{project_id}/providers/{provider_id}/resources/action",
    response_model=ProtectableResponse,
    response_model_exclude_none=True,
    summary="Query the backup capability of resources (check_protectable)",
)
def resource_action(
    body: ResourceActionRequest,
    caller: Caller = Depends(project_caller),
    _provider: str = Depends(check_provider),
) -> dict:
    """One ``check_resp`` per requested item, in request order. 401/403 before anything else; then 400
    CSBS.9001 for an unknown provider, a malformed body, a missing or empty ``check_protectable`` or a batch
    over ``batch_limit``."""
    caller.enforce("csbs:resources:check_protectable")
    limit = caller.runtime.settings.batch_limit
    if len(body.check_protectable) > limit:
        raise invalid(f"Invalid request parameters: check_protectable holds more than {limit} items")
    items = [(p.resource_id, p.resource_type) for p in body.check_protectable]
    verdicts = protection.check_protectable(caller.runtime, caller.principal, caller.project_id, items)
    return {"protectable": [v.to_wire() for v in verdicts]}
