"""Cancel a running backup or restore: opencsbs extension routes under ``/opencsbs/v1/{project_id}`` (no CSBS
route or body changes; docs/engine.md "Cancelling a job"), rule ``csbs:jobs:write`` (member or admin).

- ``POST /opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/cancel``: 202, the backup ends ``error``
  ("cancelled by <user>") once its worker notices; 404 CSBS.3001, 409 CSBS.8301 when it has ended;
- ``POST /opencsbs/v1/{project_id}/restores/{restore_id}/cancel``: 202, the restore stops before its next chunk
  write and ends ``error`` saying per disk what was written; 404 CSBS.6040, 409 CSBS.8301.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS, ErrorBody
from opencsbs.service import jobs

router = APIRouter(tags=["opencsbs extensions: cancelling jobs"], responses={**ERRORS, 409: {"model": ErrorBody}})


class CancelBody(BaseModel):
    job_id: str
    kind: str
    target_id: str
    job_status: str
    cancel_requested: str


class CancelEnvelope(BaseModel):
    cancel: CancelBody


@router.post("/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/cancel", status_code=202,
             response_model=CancelEnvelope, summary="Cancel a running backup (extension)")
def cancel_backup(checkpoint_item_id: str = Path(..., max_length=64),
                  caller: Caller = Depends(require("csbs:jobs:write"))) -> dict:
    """Ask the backup of this checkpoint_item to stop; it ends ``error`` with ``fail_reason`` "cancelled by
    <user>", its snapshot and partial bank data dropped, the server free again."""
    return {"cancel": jobs.cancel_backup(caller.runtime, caller.principal, caller.project_id,
                                            checkpoint_item_id)}


@router.post("/opencsbs/v1/{project_id}/restores/{restore_id}/cancel", status_code=202,
             response_model=CancelEnvelope, summary="Cancel a running restore (extension)")
def cancel_restore(restore_id: str = Path(..., max_length=64),
                   caller: Caller = Depends(require("csbs:jobs:write"))) -> dict:
    """Ask this restore to stop before its next chunk write; it ends ``error`` saying per disk what was
    written."""
    return {"cancel": jobs.cancel_restore(caller.runtime, caller.principal, caller.project_id, restore_id)}
