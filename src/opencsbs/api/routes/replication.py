"""opencsbs extension routes for copies of backups to second banks (docs/replication.md); no CSBS route or body
changes:

- ``POST /opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/copies`` body
  ``{"copy": {"destination": "<replica name>"}}``: start a copy (202 ``{"copy": {...}}``), rule
  ``csbs:checkpoints:create``;
- ``GET`` on the same path: ``{"copies": [...]}``, rule ``csbs:checkpoint_items:read``;
- ``GET /opencsbs/v1/{project_id}/replication/rules``: ``{"rules": [...]}`` with each rule's lag, rule
  ``csbs:policies:read``.

The copy shape is :func:`opencsbs.service.replication.copy_to_wire`; it names a replica and its kind, never its
endpoint or credentials.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS, WireModel
from opencsbs.service import replication

router = APIRouter(tags=["opencsbs extensions"], responses=ERRORS)

_ITEM = Path(..., min_length=1, max_length=64)


class CopyRequestBody(WireModel):
    destination: str = Field(min_length=1, max_length=64, description="a replica's name (settings replicas:)")


class CopyRequest(WireModel):
    copy_: CopyRequestBody = Field(alias="copy")


class Copy(BaseModel):
    id: str
    checkpoint_item_id: str
    destination: str
    destination_location: str
    status: str
    size: int
    sent_bytes: int
    created_at: str | None
    finished_at: str | None
    error: str
    deleted_at: str | None = None


class CopyResponse(BaseModel):
    copy_: Copy = Field(alias="copy")


class CopyList(BaseModel):
    copies: list[Copy]


@router.post("/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/copies", status_code=202,
             response_model=CopyResponse, response_model_by_alias=True,
             summary="Copy a backup to a second bank (extension)")
def create_copy(body: CopyRequest, checkpoint_item_id: str = _ITEM,
                caller: Caller = Depends(require("csbs:checkpoints:create"))) -> dict:
    """202 ``{"copy": {...}}`` (a copy already waiting, running or done for that replica is returned as is);
    400 CSBS.9001 unknown replica, 404 CSBS.3001 unknown backup, 400 CSBS.4000 backup not available."""
    return {"copy": replication.request_copy(caller.runtime, caller.project_id, checkpoint_item_id,
                                             body.copy_.destination)}


@router.get("/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/copies", response_model=CopyList,
            summary="List a backup's copies on second banks (extension)")
def get_copies(checkpoint_item_id: str = _ITEM,
               caller: Caller = Depends(require("csbs:checkpoint_items:read"))) -> dict:
    """200 ``{"copies": [...]}`` oldest first; 404 CSBS.3001 unknown backup."""
    return {"copies": replication.list_copies(caller.runtime, caller.project_id, checkpoint_item_id)}


class RuleLag(BaseModel):
    """A replication rule with its retention of copies and its lag (service.replication.list_rules)."""

    id: str
    project_id: str
    policy_id: str
    replica: str
    max_backups: int | None
    retention_duration_days: int | None
    pending: int = Field(description="available backups of the policy with no copy on the replica yet")
    copying: int = Field(description="copies waiting or running")
    failed: int = Field(description="backups whose last copy failed")
    last_success: str | None = Field(description="when the newest successful copy ended")
    oldest_pending_since: str | None = Field(description="creation time of the oldest backup not yet copied")
    sent_bytes: int = Field(description="stored bytes sent to the replica for the policy's backups")
    copies: int = Field(description="copies kept on the replica")
    removed: int = Field(description="copies removed from the replica by the rule's retention")


class RuleList(BaseModel):
    rules: list[RuleLag]


@router.get("/opencsbs/v1/{project_id}/replication/rules", response_model=RuleList,
            summary="List the project's replication rules with their lag (extension)")
def get_rules(caller: Caller = Depends(require("csbs:policies:read"))) -> dict:
    """200 ``{"rules": [...]}`` oldest first: each rule with its retention and its lag (pending, copying,
    failed, last_success, oldest_pending_since, sent_bytes, copies, removed)."""
    return {"rules": replication.list_rules(caller.runtime, caller.project_id)}
