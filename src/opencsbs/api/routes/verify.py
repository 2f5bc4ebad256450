"""Verify jobs, restore drills and their schedules: opencsbs extension routes under ``/opencsbs/v1/{project_id}``
(no CSBS route or body changes; a damaged backup's CSBS status reads ``error``; docs/verify.md).

- ``GET|POST /verify_runs``, ``GET /verify_runs/{run_id}``: rules ``csbs:verify:read`` / ``csbs:verify:write``;
- ``GET|POST /drills``, ``GET /drills/{drill_id}``: same rules; both lists ``marker``/``limit`` paged;
- ``GET /verifications``, ``GET /checkpoint_items/{checkpoint_item_id}/verification``: per-backup records;
- ``GET|POST /check_schedules``, ``DELETE /check_schedules/{schedule_id}``: verify and drill schedules.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS, ErrorBody, WireModel
from opencsbs.service import verify

router = APIRouter(tags=["opencsbs extensions: verify jobs and restore drills"],
                   responses={**ERRORS, 409: {"model": ErrorBody}})

ID = Field(min_length=1, max_length=64)


class VerifyCreate(WireModel):
    checkpoint_item_ids: list[str] | None = Field(None, min_length=1, max_length=verify.MAX_IDS,
                                                  description="verify these backups only")
    policy_id: str | None = Field(None, min_length=1, max_length=64, description="verify this policy's backups")
    outdated_after_days: int | None = Field(
        None, ge=0, le=36500, description="skip backups verified sound within this many days")


class VerifyCreateRequest(WireModel):
    verify_run: VerifyCreate = Field(default_factory=VerifyCreate)


class Problem(BaseModel):
    chunk: str | None
    index: str | None
    problem: Literal["damaged", "missing"]
    reason: str


class VerifyRunBody(BaseModel):
    id: str
    project_id: str
    status: Literal["pending", "running", "ok", "damaged", "error"]
    checkpoint_item_ids: list[str] | None
    policy_id: str | None
    outdated_after_days: int | None
    verified: list[str]
    skipped: list[str]
    affected: list[str] = Field(description="every backup of the project that needs a damaged or missing chunk")
    problems: list[Problem]
    chunks_checked: int
    bytes_checked: int
    message: str
    schedule_id: str | None
    created_by: str
    created_at: str
    finished_at: str | None


class VerifyRunEnvelope(BaseModel):
    verify_run: VerifyRunBody


class VerifyRunList(BaseModel):
    verify_runs: list[VerifyRunBody]


class DrillCreate(WireModel):
    choice: Literal["latest", "random", "id"] = "latest"
    checkpoint_item_id: str | None = Field(None, min_length=1, max_length=64, description="with choice 'id'")
    server_id: str | None = Field(None, min_length=1, max_length=64,
                                  description="latest/random: among this server's backups")


class DrillCreateRequest(WireModel):
    drill: DrillCreate = Field(default_factory=DrillCreate)


class DrillVolume(BaseModel):
    volume_backup_id: str
    result: Literal["passed", "failed"]
    seconds: float
    bytes: int
    reason: str
    #: where the disk was restored: ``file <path>`` on the opencsbs host, or ``RBD image <pool>/<image>``
    #: (OpenStack on Ceph RBD); deleted once compared ("" for a drill recorded before this field existed)
    scratch: str = ""


class DrillBody(BaseModel):
    id: str
    project_id: str
    checkpoint_item_id: str
    resource_id: str
    resource_name: str
    choice: str
    status: Literal["pending", "running", "passed", "failed", "error"]
    rto_seconds: float | None = Field(description="seconds the restore took (passed drills)")
    bytes_restored: int
    volumes: list[DrillVolume]
    message: str
    schedule_id: str | None
    created_by: str
    created_at: str
    finished_at: str | None


class DrillEnvelope(BaseModel):
    drill: DrillBody


class DrillList(BaseModel):
    drills: list[DrillBody]


class Verification(BaseModel):
    checkpoint_item_id: str
    resource_id: str
    status: str = Field(description="the backup's CSBS status (error when a check found it damaged)")
    fail_reason: str
    last_verified_at: str | None
    verify_result: Literal["ok", "damaged"] | None
    verify_run_id: str | None
    problems: list[Problem]
    last_drill_at: str | None
    drill_result: Literal["passed", "failed"] | None
    drill_id: str | None
    last_good_drill_at: str | None
    drill_rto_seconds: float | None


class VerificationEnvelope(BaseModel):
    verification: Verification


class VerificationList(BaseModel):
    verifications: list[Verification]


class ScheduleCreate(WireModel):
    kind: Literal["verify", "drill"]
    pattern: str = Field(min_length=1, max_length=4096, description="an RRULE, as a policy's scheduled operation")
    start_time: str | None = Field(None, max_length=64, description="UTC, default now")
    parameters: dict[str, str | int | None] = Field(
        default_factory=dict, description="verify: policy_id, outdated_after_days; drill: choice, server_id")


class ScheduleCreateRequest(WireModel):
    check_schedule: ScheduleCreate


class ScheduleBody(BaseModel):
    id: str
    project_id: str
    kind: str
    pattern: str
    start_time: str
    next_run_at: str | None
    parameters: dict
    created_by: str
    created_at: str


class ScheduleEnvelope(BaseModel):
    check_schedule: ScheduleBody


class ScheduleList(BaseModel):
    check_schedules: list[ScheduleBody]


# --- verify runs ----------------------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/verify_runs", response_model=VerifyRunList,
            summary="List verify runs (extension)")
def list_verify_runs(marker: str | None = Query(None, max_length=64,
                                                description="the id of the previous page's last run"),
                     limit: int | None = Query(None, ge=1, le=1000),
                     caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """The project's verify runs, newest first, after run id ``marker``, at most ``limit`` (default 100); 400
    CSBS.9001 for a marker that is not one of the project's runs."""
    return {"verify_runs": verify.list_verify_runs(caller.runtime, caller.project_id, limit, marker)}


@router.post("/opencsbs/v1/{project_id}/verify_runs", response_model=VerifyRunEnvelope,
             summary="Start a verify run (extension)")
def start_verify_run(body: VerifyCreateRequest | None = None,
                     caller: Caller = Depends(require("csbs:verify:write"))) -> dict:
    """Re-read and re-hash every chunk of the project's backups (or the listed ones, or a policy's), skipping
    those verified sound within ``outdated_after_days``. The run is ``pending``; read it back for its result.
    404 CSBS.3001 (a listed backup unknown), 404 CSBS.3000 (unknown policy)."""
    b = body.verify_run if body else VerifyCreate()
    return {"verify_run": verify.start_verify(caller.runtime, caller.principal, caller.project_id,
                                              checkpoint_item_ids=b.checkpoint_item_ids, policy_id=b.policy_id,
                                              outdated_after_days=b.outdated_after_days)}


@router.get("/opencsbs/v1/{project_id}/verify_runs/{run_id}", response_model=VerifyRunEnvelope,
            summary="Show a verify run (extension)")
def show_verify_run(run_id: str = Path(..., max_length=64),
                    caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """One run with the backups it verified, skipped, and found affected; 404 CSBS.8201."""
    return {"verify_run": verify.get_verify_run(caller.runtime, caller.project_id, run_id)}


# --- drills ---------------------------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/drills", response_model=DrillList, summary="List restore drills (extension)")
def list_drills(server_id: str | None = Query(None, max_length=64),
                checkpoint_item_id: str | None = Query(None, max_length=64),
                marker: str | None = Query(None, max_length=64,
                                           description="the id of the previous page's last drill"),
                limit: int | None = Query(None, ge=1, le=1000),
                caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """The project's drills, newest first (filters: ``server_id``, ``checkpoint_item_id``), after drill id
    ``marker``, at most ``limit`` (default 100); 400 CSBS.9001 for a marker that is not one of the drills the
    project and the filters select."""
    return {"drills": verify.list_drills(caller.runtime, caller.project_id, server_id, checkpoint_item_id, limit,
                                         marker)}


@router.post("/opencsbs/v1/{project_id}/drills", response_model=DrillEnvelope,
             summary="Start a restore drill (extension)")
def start_drill(body: DrillCreateRequest | None = None,
                caller: Caller = Depends(require("csbs:verify:write"))) -> dict:
    """Restore one backup (``latest``, ``random``, or by ``id``) onto scratch space, compare every byte with its
    recorded hashes, time it, delete the copy. 404 CSBS.3001 (unknown backup), 400 CSBS.6000 (a ``server_id``
    the project does not have), 409 CSBS.8204 (no available backup to drill)."""
    b = body.drill if body else DrillCreate()
    return {"drill": verify.start_drill(caller.runtime, caller.principal, caller.project_id, b.choice,
                                        b.checkpoint_item_id, b.server_id)}


@router.get("/opencsbs/v1/{project_id}/drills/{drill_id}", response_model=DrillEnvelope,
            summary="Show a restore drill (extension)")
def show_drill(drill_id: str = Path(..., max_length=64),
               caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """One drill; 404 CSBS.8202."""
    return {"drill": verify.get_drill(caller.runtime, caller.project_id, drill_id)}


# --- per-backup records ---------------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/verifications", response_model=VerificationList,
            summary="Verification records of the project's backups (extension)")
def list_verifications(result: Literal["ok", "damaged", "passed", "failed"] | None = Query(None),
                       server_id: str | None = Query(None, max_length=64),
                       caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """Every backup a verify run or drill has looked at, oldest first; ``result=damaged`` lists the damaged."""
    return {"verifications": verify.list_verifications(caller.runtime, caller.project_id, result, server_id)}


@router.get("/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/verification",
            response_model=VerificationEnvelope, summary="When a backup was last verified and drilled (extension)")
def backup_verification(checkpoint_item_id: str = Path(..., max_length=64),
                        caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """Last verify (when, result, the damaged or missing chunks) and last drill (result, RTO); 404 CSBS.3001."""
    return {"verification": verify.backup_verification(caller.runtime, caller.project_id, checkpoint_item_id)}


# --- schedules ------------------------------------------------------------------------------------------------


@router.get("/opencsbs/v1/{project_id}/check_schedules", response_model=ScheduleList,
            summary="List verify and drill schedules (extension)")
def list_schedules(caller: Caller = Depends(require("csbs:verify:read"))) -> dict:
    """The project's schedules, oldest first."""
    return {"check_schedules": verify.list_schedules(caller.runtime, caller.project_id)}


@router.post("/opencsbs/v1/{project_id}/check_schedules", response_model=ScheduleEnvelope,
             summary="Schedule verify runs or drills (extension)")
def create_schedule(body: ScheduleCreateRequest, caller: Caller = Depends(require("csbs:verify:write"))) -> dict:
    """Start a verify run or a drill at every time point of ``pattern`` (checked at each housekeeping pass).
    400 CSBS.9001 (bad pattern, named ``check_schedule.pattern``, or parameters), 404 CSBS.3000
    (unknown policy), 400 CSBS.6000 (a drill schedule's ``server_id`` the project does not have)."""
    b = body.check_schedule
    return {"check_schedule": verify.create_schedule(caller.runtime, caller.principal, caller.project_id, b.kind,
                                                     b.pattern, b.start_time, b.parameters)}


@router.delete("/opencsbs/v1/{project_id}/check_schedules/{schedule_id}",
               summary="Remove a verify or drill schedule (extension)")
def delete_schedule(schedule_id: str = Path(..., max_length=64),
                    caller: Caller = Depends(require("csbs:verify:write"))) -> dict:
    """``{}``; 404 CSBS.8205."""
    verify.delete_schedule(caller.runtime, caller.project_id, schedule_id)
    return {}
