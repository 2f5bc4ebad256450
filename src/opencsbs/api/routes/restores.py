"""``POST /v1/{project_id}/restores`` (restoration_management/creating_a_restoration_task.rst) and
``GET /v1/{project_id}/restores/{restore_id}`` (Karbor's restore resource: follow a restore to its end)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS
from opencsbs.api.schemas.restores import RestoreEnvelope, RestoreRequest
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import SERVER
from opencsbs.service import restores

router = APIRouter(tags=["restores"], responses=ERRORS)


@router.post("/v1/{project_id}/restores", response_model=RestoreEnvelope, summary="Create a restoration task")
def create_restore(body: RestoreRequest, caller: Caller = Depends(require("csbs:restores:create"))) -> dict:
    """Restore a backup onto a server (its disks per ``targets.volumes``); ``power_on`` starts the server
    afterwards. Refused with the check_restorable code when a rule fails."""
    r = body.restore
    if r.provider_id != caller.runtime.settings.provider_id:
        raise CSBSError(codes.INVALID_PARAMETER, message="provider invalid")
    p = r.parameters
    request = restores.RestorePlan(p.checkpoint_item_id, p.targets.server_id, SERVER,
                                      restores.mapping_of(p.targets.volumes))
    restore = restores.create_restore(caller.runtime, caller.principal, caller.project_id,
                                      checkpoint_id=r.checkpoint_id, request=request, power_on=p.power_on,
                                      restore_target=r.restore_target)
    return {"restore": restore}


@router.get("/v1/{project_id}/restores/{restore_id}", response_model=RestoreEnvelope, summary="Show a restoration")
def show_restore(restore_id: str = Path(..., max_length=64),
                 caller: Caller = Depends(require("csbs:checkpoint_items:read"))) -> dict:
    """A restoration task with its ``status`` (in_progress, success, error) and ``progress``."""
    return {"restore": restores.get_restore(caller.runtime, caller.project_id, restore_id)}
