"""The delete job (target: checkpoint id; state ``{"items": [checkpoint_item ids]}``): drop backups from the
bank, and its failure path.

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``  items (and their checkpoint) ``waiting_delete`` → ``deleting`` → ``drop``
``drop``   first, once, the legal holds and retention locks are checked again (one set after the delete was
           accepted still stops it while nothing is removed): a kept item returns to ``available`` with the
           refusal (CSBS.8101/8102) in ``fail_code``/``fail_reason``, ``fail_op`` delete; then drop each other
           volume backup's bank index (:meth:`VolumeStore.delete_index
           <opencsbs.bank.face.VolumeStore.delete_index>`); those items ``deleted``, and the checkpoint too when
           all of its items are gone → done

The chunks are freed by the bank's next garbage collection (``engine.housekeeping.collect_garbage``).
:func:`fail_delete` ends it ``failed``: the items read ``error`` with ``fail_op`` delete.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.locks import refusals
from opencsbs.db.models import Checkpoint, CheckpointItem
from opencsbs.engine._common import drop_index, fail_fields
from opencsbs.engine.catalog import drop_record
from opencsbs.engine.jobs import JobHandle
from opencsbs.runtime import Runtime


def _item_ids(job: JobHandle) -> list[str]:
    return list(job.state.get("items") or [])


def run_delete(runtime: Runtime, job: JobHandle) -> None:
    """Drop the bank indexes of the job's checkpoint_items, then mark them (and their checkpoint) deleted."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def _mark_deleting(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: items and checkpoint ``deleting`` → ``drop``."""
    item_ids = _item_ids(job)

    def apply(session: Session) -> None:
        for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids))):
            if item.status == "waiting_delete":
                item.status = "deleting"
        checkpoint = session.get(Checkpoint, job.target_id)
        if checkpoint is not None and checkpoint.status == "waiting_delete":
            checkpoint.status = "deleting"

    job.commit("drop", None, apply)


def _recheck(runtime: Runtime, job: JobHandle) -> None:
    """Before anything is removed: the items a legal hold or retention lock now keeps go back to ``available``
    with the refusal as their ``fail_*``; recorded (``rechecked``) in the same transaction, so a resumed drop
    does not check again after it has begun removing."""
    item_ids = _item_ids(job)

    def apply(session: Session) -> None:
        items = [i for i in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids))
                                            .with_for_update())
                 if i.status == "deleting"]
        by_project: dict[str, list[CheckpointItem]] = {}
        for item in items:
            by_project.setdefault(item.project_id, []).append(item)
        now = utcnow()
        for project_id, group in by_project.items():
            for item in group:
                error = refusals(session, project_id, [item], now).get(item.id)
                if error is not None:
                    item.status = "available"
                    item.updated_at = now
                    fail_fields(item, error, "delete")

    job.commit("drop", {"rechecked": True}, apply)


def _drop(runtime: Runtime, job: JobHandle) -> None:
    """Step ``drop``: the re-check of holds and locks (once), then the bank indexes of the items still
    ``deleting`` go; those items (and a checkpoint left without items) ``deleted`` → done."""
    if not job.state.get("rechecked"):
        _recheck(runtime, job)
    item_ids = _item_ids(job)
    with runtime.sessions() as session:
        going = [item for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids)))
                 if item.status in ("deleting", "deleted")]
        names = [vb.index_name for item in going for vb in item.volume_backups if vb.index_name]
        going_ids = [item.id for item in going]
    for name in names:
        job.check()
        drop_index(runtime, name)
    for item_id in going_ids:
        drop_record(runtime, item_id)

    def apply(session: Session) -> None:
        now = utcnow()
        for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(going_ids))):
            item.status = "deleted"
            item.finished_at = item.finished_at or now
            for vb in item.volume_backups:
                vb.status = "deleted"
        checkpoint = session.get(Checkpoint, job.target_id)
        if checkpoint is not None:
            session.flush()
            statuses = {i.status for i in checkpoint.items}
            if statuses <= {"deleted"}:
                checkpoint.status = "deleted"
            elif checkpoint.status in ("waiting_delete", "deleting"):
                checkpoint.status = "available" if "available" in statuses else "error"

    job.commit("done", None, apply, status="done")


# --- the failure path ---------------------------------------------------------------------------------------


def fail_delete(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
    """End a delete job as failed: its items read ``error`` with ``fail_op`` delete."""
    item_ids = _item_ids(job)

    def apply(session: Session) -> None:
        for item in session.scalars(select(CheckpointItem).where(CheckpointItem.id.in_(item_ids))):
            if item.status in ("waiting_delete", "deleting"):
                item.status = "error"
                fail_fields(item, error, "delete")
        checkpoint = session.get(Checkpoint, job.target_id)
        if checkpoint is not None and checkpoint.status in ("waiting_delete", "deleting"):
            checkpoint.status = "error"

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


#: the delete's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _mark_deleting,
    "drop": _drop,
}
