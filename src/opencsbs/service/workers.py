"""Workers and placement for the API and the CLI (docs/engine.md "Placement"): the registered workers with their
host, capabilities, current job and silent state, and the job of a backup or restore with what it needs and, when
no live worker can run it, why it waits.

Shapes (times: wire timestamps, naive UTC):

- worker: ``{"name", "host", "capabilities": [...], "current_job": id|null, "current_kind": str|null,
  "current_target": id|null, "started_at", "seen_at", "seen_seconds_ago": float, "silent": bool}``; ``silent``:
  no heartbeat for longer than ``engine.lease_seconds`` (engine/placement.py ``silent_after``).
- job: ``{"id", "kind", "target_id", "status", "step", "attempts", "owner": str|null, "needs": [...],
  "waiting": str|null, "error": str|null, "created_at", "finished_at"}``; ``waiting``: why no live worker runs it
  (e.g. "no live worker can serve libvirt:kvm-2 (...)"), null when one can or it has ended.

Errors: 404 CSBS.3001 (unknown checkpoint_item of the project), 404 CSBS.6040 (unknown restore).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.models import CheckpointItem, Job, Restore, WorkerSeen
from opencsbs.engine.placement import silent_after, waiting_reason, worker_capabilities
from opencsbs.runtime import Runtime


def own_capabilities(runtime: Runtime) -> list[str]:
    """What this process's workers declare (settings ``worker.*`` and the cloud driver)."""
    return worker_capabilities(runtime)


def list_workers(runtime: Runtime) -> list[dict[str, Any]]:
    """Every registered worker (see the module's text), by host then name."""
    bound = silent_after(runtime)
    now = utcnow()
    with runtime.sessions() as session:
        rows = session.execute(
            select(WorkerSeen, Job.kind, Job.target_id)
            .outerjoin(Job, Job.id == WorkerSeen.current_job)
            .order_by(WorkerSeen.host, WorkerSeen.name)).all()
        out = []
        for w, kind, target in rows:
            ago = max((now - w.seen_at).total_seconds(), 0.0)
            out.append({"name": w.name, "host": w.host or "", "capabilities": list(w.capabilities or []),
                        "current_job": w.current_job, "current_kind": kind if w.current_job else None,
                        "current_target": target if w.current_job else None,
                        "started_at": wire_ts(w.started_at), "seen_at": wire_ts(w.seen_at),
                        "seen_seconds_ago": round(ago, 1), "silent": ago > bound})
    return out


def job_to_wire(runtime: Runtime, session, job: Job) -> dict[str, Any]:
    """The job shape of the module's text."""
    return {"id": job.id, "kind": job.kind, "target_id": job.target_id, "status": job.status, "step": job.step,
            "attempts": job.attempts, "owner": job.owner, "needs": list(job.needs or []),
            "waiting": waiting_reason(session, runtime, job), "error": job.error,
            "created_at": wire_ts(job.created_at), "finished_at": wire_ts(job.finished_at)}


def _job_of(runtime: Runtime, kind: str, target_id: str) -> dict[str, Any] | None:
    with runtime.sessions() as session:
        job = session.scalars(select(Job).where(Job.kind == kind, Job.target_id == target_id)
                              .order_by(Job.created_at.desc())).first()
        return job_to_wire(runtime, session, job) if job is not None else None


def backup_job(runtime: Runtime, project_id: str | None, item_id: str) -> dict[str, Any] | None:
    """The job of the backup of checkpoint_item ``item_id`` (of ``project_id``; None: any project), None when
    it has none any more (housekeeping deletes old finished jobs). Raises 404 CSBS.3001 (unknown item)."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        if item is None or (project_id is not None and item.project_id != project_id):
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
    return _job_of(runtime, "backup", item_id)


def restore_job(runtime: Runtime, project_id: str | None, restore_id: str) -> dict[str, Any] | None:
    """The job of restore ``restore_id`` (of ``project_id``; None: any project), None when it has none any more.
    Raises 404 CSBS.6040 (unknown restore)."""
    with runtime.sessions() as session:
        restore = session.get(Restore, restore_id)
        if restore is None or (project_id is not None and restore.project_id != project_id):
            raise CSBSError(codes.TASK_NOT_FOUND)
    return _job_of(runtime, "restore", restore_id)
