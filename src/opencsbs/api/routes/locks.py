"""Retention locks, legal holds and their audit trail: opencsbs extension routes under
``/opencsbs/v1/{project_id}`` (no CSBS route or body changes; docs/locks.md).

- ``GET|POST /locks``, ``GET|PUT|DELETE /locks/{lock_id}``: rules ``csbs:locks:read`` / ``csbs:locks:write``
  (weakening a governance lock also needs ``csbs:locks:bypass_governance``);
- ``GET|POST /holds``, ``GET /holds/{hold_id}``, ``POST /holds/{hold_id}/release``: ``csbs:locks:read`` /
  ``csbs:holds:write``;
- ``GET /lock_audit``: every act on the project's locks and holds, ``csbs:locks:read``;
- ``GET /checkpoint_items/{checkpoint_item_id}/retention``: may this backup be deleted now, and why not.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS, MAX_QUERY_INT, ErrorBody, WireModel
from opencsbs.core import locks as rules
from opencsbs.service import locks

router = APIRouter(tags=["opencsbs extensions: retention locks and legal holds"],
                   responses={**ERRORS, 409: {"model": ErrorBody}})

TAG_KEY = r"^[A-Za-z0-9_-]{1,36}$"
TAG_VALUE = r"^[A-Za-z0-9_-]{0,43}$"


class LockCreate(WireModel):
    mode: Literal["governance", "compliance"]
    min_retention_days: int = Field(ge=1, le=rules.MAX_DAYS, description="days each covered backup is kept")
    max_retention_days: int | None = Field(None, ge=1, le=rules.MAX_DAYS)
    policy_id: str | None = Field(None, min_length=1, max_length=64, description="lock this policy's backups only")
    cooling_off_hours: int | None = Field(
        None, ge=0, le=rules.MAX_COOLING_OFF_HOURS,
        description="compliance: hours during which the lock may still be removed (default 72)")


class LockCreateRequest(WireModel):
    lock: LockCreate


class LockUpdate(WireModel):
    mode: Literal["governance", "compliance"] | None = None
    min_retention_days: int | None = Field(None, ge=1, le=rules.MAX_DAYS)
    max_retention_days: int | None = Field(None, ge=1, le=rules.MAX_DAYS)


class LockUpdateRequest(WireModel):
    lock: LockUpdate


class LockBody(BaseModel):
    id: str
    project_id: str
    policy_id: str | None
    mode: str
    min_retention_days: int
    max_retention_days: int | None
    cooling_off_hours: int
    cooling_off_until: str | None
    immutable: bool
    created_by: str
    created_at: str
    updated_at: str


class LockEnvelope(BaseModel):
    lock: LockBody


class LockList(BaseModel):
    locks: list[LockBody]


class HoldTag(WireModel):
    key: str = Field(pattern=TAG_KEY)
    value: str = Field("", pattern=TAG_VALUE)


class HoldCreate(WireModel):
    name: str = Field(min_length=1, max_length=255)
    reason: str = Field("", max_length=4096)
    checkpoint_item_ids: list[str] | None = Field(None, min_length=1, max_length=1000)
    tag: HoldTag | None = None
    policy_id: str | None = Field(None, min_length=1, max_length=64)
    created_after: str | None = Field(None, max_length=64, description="backups created at or after (UTC)")
    created_before: str | None = Field(None, max_length=64, description="backups created at or before (UTC)")


class HoldCreateRequest(WireModel):
    hold: HoldCreate


class HoldTagBody(BaseModel):
    key: str
    value: str


class HoldBody(BaseModel):
    id: str
    project_id: str
    name: str
    reason: str
    checkpoint_item_ids: list[str] | None
    tag: HoldTagBody | None
    policy_id: str | None
    created_after: str | None
    created_before: str | None
    status: Literal["active", "released"]
    created_by: str
    created_at: str
    released_at: str | None
    released_by: str | None


class HoldEnvelope(BaseModel):
    hold: HoldBody


class HoldList(BaseModel):
    holds: list[HoldBody]


class AuditRecord(BaseModel):
    id: int
    at: str
    action: str
    target_id: str
    actor: str
    actor_project: str
    bypass: bool
    detail: dict


class AuditList(BaseModel):
    records: list[AuditRecord]


class RetentionVerdict(BaseModel):
    checkpoint_item_id: str
    deletable: bool
    reason: Literal["legal_hold", "retention_lock"] | None
    hold_id: str | None
    lock_id: str | None
    mode: str | None
    locked_until: str | None
    holds: list[str]
    locks: list[str]


class RetentionEnvelope(BaseModel):
    retention: RetentionVerdict


# --- locks ----------------------------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/locks", response_model=LockList, summary="List retention locks (extension)")
def list_locks(caller: Caller = Depends(require("csbs:locks:read"))) -> dict:
    """The project's retention locks (project-wide and per policy), oldest first."""
    return {"locks": locks.list_locks(caller.runtime, caller.project_id)}


@router.post("/opencsbs/v1/{project_id}/locks", response_model=LockEnvelope,
             summary="Set a retention lock (extension)")
def create_lock(body: LockCreateRequest, caller: Caller = Depends(require("csbs:locks:write"))) -> dict:
    """Lock the project's backups (or ``policy_id``'s): each is kept ``min_retention_days`` after its creation.
    400 CSBS.9001 (bad values), 404 CSBS.3000 (unknown policy)."""
    b = body.lock
    return {"lock": locks.create_lock(caller.runtime, caller.principal, caller.project_id, mode=b.mode,
                                      min_retention_days=b.min_retention_days,
                                      max_retention_days=b.max_retention_days, policy_id=b.policy_id,
                                      cooling_off_hours=b.cooling_off_hours)}


@router.get("/opencsbs/v1/{project_id}/locks/{lock_id}", response_model=LockEnvelope,
            summary="Show a retention lock (extension)")
def show_lock(lock_id: str = Path(..., max_length=64), caller: Caller = Depends(require("csbs:locks:read"))) -> dict:
    """One lock; 404 CSBS.8105."""
    return {"lock": locks.get_lock(caller.runtime, caller.project_id, lock_id)}


@router.put("/opencsbs/v1/{project_id}/locks/{lock_id}", response_model=LockEnvelope,
            summary="Change a retention lock (extension)")
def update_lock(body: LockUpdateRequest, lock_id: str = Path(..., max_length=64),
                caller: Caller = Depends(require("csbs:locks:write"))) -> dict:
    """Strengthen freely; weaken a governance lock with ``csbs:locks:bypass_governance`` (403 CSBS.8104
    otherwise, audited), a compliance lock only in its cooling-off period (409 CSBS.8103 after)."""
    b = body.lock
    return {"lock": locks.update_lock(caller.runtime, caller.principal, caller.project_id, lock_id, mode=b.mode,
                                      min_retention_days=b.min_retention_days,
                                      max_retention_days=b.max_retention_days)}


@router.delete("/opencsbs/v1/{project_id}/locks/{lock_id}", summary="Remove a retention lock (extension)")
def remove_lock(lock_id: str = Path(..., max_length=64), caller: Caller = Depends(require("csbs:locks:write"))) -> dict:
    """``{}``; a governance lock needs ``csbs:locks:bypass_governance`` (403 CSBS.8104), a compliance lock past its
    cooling-off period cannot be removed (409 CSBS.8103). Audited."""
    locks.remove_lock(caller.runtime, caller.principal, caller.project_id, lock_id)
    return {}


# --- holds ----------------------------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/holds", response_model=HoldList, summary="List legal holds (extension)")
def list_holds(status: Literal["active", "released"] | None = Query(None),
               caller: Caller = Depends(require("csbs:locks:read"))) -> dict:
    """The project's legal holds, oldest first (``status`` filters)."""
    return {"holds": locks.list_holds(caller.runtime, caller.project_id, status)}


@router.post("/opencsbs/v1/{project_id}/holds", response_model=HoldEnvelope,
             summary="Place a legal hold (extension)")
def create_hold(body: HoldCreateRequest, caller: Caller = Depends(require("csbs:holds:write"))) -> dict:
    """Keep the backups selected by ids, tag, policy and/or creation-time range (all given must match) until the
    hold is released. 400 CSBS.9001, 404 CSBS.3001 (a listed backup unknown), 404 CSBS.3000 (unknown policy)."""
    b = body.hold
    sel = locks.HoldSelector(checkpoint_item_ids=b.checkpoint_item_ids, tag_key=b.tag.key if b.tag else None,
                             tag_value=b.tag.value if b.tag else None, policy_id=b.policy_id,
                             created_after=b.created_after, created_before=b.created_before)
    return {"hold": locks.create_hold(caller.runtime, caller.principal, caller.project_id, b.name, b.reason, sel)}


@router.get("/opencsbs/v1/{project_id}/holds/{hold_id}", response_model=HoldEnvelope,
            summary="Show a legal hold (extension)")
def show_hold(hold_id: str = Path(..., max_length=64), caller: Caller = Depends(require("csbs:locks:read"))) -> dict:
    """One hold; 404 CSBS.8106."""
    return {"hold": locks.get_hold(caller.runtime, caller.project_id, hold_id)}


@router.post("/opencsbs/v1/{project_id}/holds/{hold_id}/release", response_model=HoldEnvelope,
             summary="Release a legal hold (extension)")
def release_hold(hold_id: str = Path(..., max_length=64),
                 caller: Caller = Depends(require("csbs:holds:write"))) -> dict:
    """The hold reads ``released`` and no longer keeps anything; 409 CSBS.8107 when already released. Audited."""
    return {"hold": locks.release_hold(caller.runtime, caller.principal, caller.project_id, hold_id)}


# --- audit and per-backup verdict ------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/lock_audit", response_model=AuditList,
            summary="Audit trail of retention locks and legal holds (extension)")
def list_audit(marker: int | None = Query(None, ge=0, le=MAX_QUERY_INT),
               limit: int | None = Query(None, ge=1, le=MAX_QUERY_INT),
               caller: Caller = Depends(require("csbs:locks:read"))) -> dict:
    """Every create, change, removal and release (who, when, before/after, governance bypass), oldest first,
    after record id ``marker``, at most ``limit`` (default 1000)."""
    return {"records": locks.list_audit(caller.runtime, caller.project_id, marker, limit)}


@router.get("/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/retention",
            response_model=RetentionEnvelope, summary="Whether a backup may be deleted now (extension)")
def backup_retention(checkpoint_item_id: str = Path(..., max_length=64),
                     caller: Caller = Depends(require("csbs:locks:read"))) -> dict:
    """``deletable``, and when not the hold or the lock (with ``locked_until``) that keeps it; 404 CSBS.3001."""
    return {"retention": locks.backup_retention(caller.runtime, caller.project_id, checkpoint_item_id)}
