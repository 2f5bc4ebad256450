"""Job control for the API and the CLI: cancel a running backup or restore (an opencsbs extension, docs/engine.md
"Cancelling a job"), whether a service's worker runs, and a worker for one backup's or restore's job only.

The use cases only ask: they write ``cancel_requested`` ("cancelled by <user>") on the job row
(:func:`opencsbs.engine.jobs.request_cancel`); the worker running the job sees it at its next heartbeat, step
commit or progress write and ends the job through its failure path (a backup: item ``error`` with the reason, its
snapshot and partial indexes dropped, the server lock released; a restore: stops before its next chunk write,
restore ``error`` saying per disk what was written). A job no worker holds is failed by the next worker that
claims it (``opencsbs backup cancel`` runs it at once when no worker holds it).

Errors: 404 CSBS.3001 (unknown checkpoint_item of the project), 404 CSBS.6040 (unknown restore), 409 CSBS.8301
(the backup or restore has already ended).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from opencsbs.auth.base import Principal
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, Job, Restore
from opencsbs.engine.jobs import RUNNABLE, request_cancel
from opencsbs.runtime import Runtime


def _cancel(runtime: Runtime, principal: Principal, kind: str, target_id: str, status: str,
            what: str) -> dict[str, Any]:
    with transaction(runtime.sessions) as session:
        job = session.scalars(select(Job).where(Job.kind == kind, Job.target_id == target_id,
                                                Job.status.in_(RUNNABLE))
                              .order_by(Job.created_at.desc())).first()
        if job is None or not request_cancel(session, job.id, f"cancelled by {principal.user_id}"):
            raise CSBSError(codes.JOB_ENDED, what, target_id, status)
        session.flush()
        session.refresh(job)
        return {"job_id": job.id, "kind": kind, "target_id": target_id, "job_status": job.status,
                "cancel_requested": job.cancel_requested}


def cancel_backup(runtime: Runtime, principal: Principal, project_id: str, item_id: str) -> dict[str, Any]:
    """Ask the backup job of checkpoint_item ``item_id`` (of ``project_id``) to stop; returns
    ``{"job_id", "kind": "backup", "target_id", "job_status", "cancel_requested"}``. Raises CSBSError 404
    CSBS.3001 (unknown item), 409 CSBS.8301 (the backup has ended)."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        if item is None or item.project_id != project_id or item.status == "deleted":
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
        status = item.status
    return _cancel(runtime, principal, "backup", item_id, status, "Backup")


def cancel_restore(runtime: Runtime, principal: Principal, project_id: str, restore_id: str) -> dict[str, Any]:
    """Ask the job of restore ``restore_id`` (of ``project_id``) to stop; returns the same shape as
    :func:`cancel_backup` (``kind``: "restore"). Raises CSBSError 404 CSBS.6040 (unknown restore), 409 CSBS.8301
    (the restore has ended)."""
    with runtime.sessions() as session:
        restore = session.get(Restore, restore_id)
        if restore is None or restore.project_id != project_id:
            raise CSBSError(codes.TASK_NOT_FOUND)
        status = restore.status
    return _cancel(runtime, principal, "restore", restore_id, status, "Restore")


def job_holder(runtime: Runtime, kind: str, target_id: str) -> str | None:
    """The worker that holds the running ``kind`` job of ``target_id`` under a live lease, or None (no such job,
    or nobody holds it now)."""
    from opencsbs.core.timeutil import utcnow

    with runtime.sessions() as session:
        row = session.execute(select(Job.owner, Job.lease_until).where(
            Job.kind == kind, Job.target_id == target_id, Job.status.in_(RUNNABLE))).first()
    if row is None or row.lease_until is None or row.lease_until < utcnow():
        return None
    return row.owner


def restore_project(runtime: Runtime, restore_id: str) -> str | None:
    """The project of restore ``restore_id`` (any project), None when there is no such restore."""
    with runtime.sessions() as session:
        restore = session.get(Restore, restore_id)
        return restore.project_id if restore is not None else None


def workers_seen(runtime: Runtime) -> int:
    """How many ``serve``/``worker`` workers were seen recently (their heartbeat rows, engine/worker.py)."""
    from opencsbs.engine.worker import workers_seen as seen

    return seen(runtime.sessions)


def worker_for(runtime: Runtime, target_id: str, prefix: str = "cli"):
    """An :class:`~opencsbs.engine.worker.Worker` that runs only the jobs of ``target_id`` (a checkpoint_item or
    restore id) and writes no heartbeat row: ``run_one()`` or ``run_forever()`` until its ``stop`` is set."""
    from opencsbs.engine.worker import Worker, worker_name

    return Worker(runtime, worker_name(prefix), target_id=target_id)
