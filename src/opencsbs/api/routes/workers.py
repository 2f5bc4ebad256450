"""Workers and job placement: opencsbs extension routes (no CSBS route or body changes; docs/engine.md
"Placement"):

- ``GET /opencsbs/v1/{project_id}/workers``: every registered worker (of the whole deployment) with its host,
  capabilities, current job, last heartbeat and ``silent`` state, rule ``csbs:workers:read`` (default: a cloud
  admin, as the workers serve every project; the URL's project is the caller's scope, as on every route);
- ``GET /opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/job``: the backup's job, what it needs and
  why it waits when no live worker can run it (``waiting``), rule ``csbs:checkpoint_items:read``; 404 CSBS.3001;
- ``GET /opencsbs/v1/{project_id}/restores/{restore_id}/job``: the same for a restore; 404 CSBS.6040.

Shapes: :mod:`opencsbs.service.workers`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS
from opencsbs.service import workers

router = APIRouter(tags=["opencsbs extensions: workers and placement"], responses=ERRORS)


class Worker(BaseModel):
    name: str
    host: str
    capabilities: list[str]
    current_job: str | None
    current_kind: str | None
    current_target: str | None
    started_at: str | None
    seen_at: str | None
    seen_seconds_ago: float
    silent: bool


class WorkerList(BaseModel):
    workers: list[Worker]


class Job(BaseModel):
    id: str
    kind: str
    target_id: str
    status: str
    step: str
    attempts: int
    owner: str | None
    needs: list[str]
    waiting: str | None
    error: str | None
    created_at: str | None
    finished_at: str | None


class JobEnvelope(BaseModel):
    job: Job | None


@router.get("/opencsbs/v1/{project_id}/workers", response_model=WorkerList,
            summary="List the deployment's workers (extension, cloud admin)")
def list_workers(caller: Caller = Depends(require("csbs:workers:read"))) -> dict:
    """200 ``{"workers": [...]}`` by host then name; ``silent``: no heartbeat for longer than
    ``engine.lease_seconds`` (its job, if any, is then resumed by a worker that serves it); 403 unless rule
    ``csbs:workers:read`` (default: a cloud admin)."""
    return {"workers": workers.list_workers(caller.runtime)}


@router.get("/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/job", response_model=JobEnvelope,
            summary="The job of a backup: its needs and why it waits (extension)")
def backup_job(checkpoint_item_id: str = Path(..., min_length=1, max_length=64),
               caller: Caller = Depends(require("csbs:checkpoint_items:read"))) -> dict:
    """200 ``{"job": {...}}`` (``null`` once housekeeping deleted the finished job); ``waiting``: why no live
    worker runs it, e.g. "no live worker can serve libvirt:kvm-2 (...)"; 404 CSBS.3001 unknown backup."""
    return {"job": workers.backup_job(caller.runtime, caller.project_id, checkpoint_item_id)}


@router.get("/opencsbs/v1/{project_id}/restores/{restore_id}/job", response_model=JobEnvelope,
            summary="The job of a restore: its needs and why it waits (extension)")
def restore_job(restore_id: str = Path(..., min_length=1, max_length=64), caller: Caller = Depends(require("csbs:checkpoint_items:read"))) -> dict:
    """200 ``{"job": {...}}`` as for a backup; 404 CSBS.6040 unknown restore."""
    return {"job": workers.restore_job(caller.runtime, caller.project_id, restore_id)}
