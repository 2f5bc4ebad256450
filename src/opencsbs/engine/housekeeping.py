"""Housekeeping: delete finished jobs past their retention, and change-tracking data no backup can need.

Run by the scheduler every ``engine.housekeeping_seconds`` (:func:`housekeep`); every step is idempotent, so
several schedulers sharing a database may run it at once.

- **Jobs** (``db.models.Job``): a job whose status is ``done`` or ``failed`` and whose ``finished_at`` is older
  than ``engine.job_retention_days`` is deleted, unless something still points at it: a server lock
  (``resource_locks.job_id``), a checkpoint_item still being made, restored or deleted, or a restore still
  ``in_progress``. Pending and running jobs are never touched. A finished checkpoint_item keeps showing its
  backup job's id as ``extend_info.taskid`` (an identifier; no call looks a job up by it).
- **Change tracking**: the change tokens a future incremental backup may start from are those of the volume
  backups still kept (not deleted, not failed) and those recorded by unfinished backup jobs; the cloud driver
  drops the rest (:meth:`opencsbs.clouds.base.CloudDriver.prune_change_tracking`; the sandbox removes its
  older change-log generations).
- **Bank space** (:func:`collect_garbage`): when the bank's last garbage collection (its ``gc/finished`` object,
  written by any process sharing the bank) ended more than ``engine.gc_interval_seconds`` ago, the pass runs
  ``Bank.gc(grace_seconds=engine.gc_grace_seconds)``, so the chunks of deleted, retention-deleted and failed
  backups are freed without an operator. It logs what it freed and what is reclaimable after the grace period.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from opencsbs.bank import Bank, GCReport
from opencsbs.clouds.base import DataPath
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, Job, ResourceLock, Restore, VolumeBackup
from opencsbs.engine.backup import change_tokens_of
from opencsbs.engine.jobs import RUNNABLE
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")

FINISHED = ("done", "failed")
#: checkpoint_item statuses after which its job is no longer needed
SETTLED_ITEM = ("available", "error", "deleted")
BATCH = 500


def _referenced_job_ids():
    """Selects of the job ids something still points at."""
    return (
        select(ResourceLock.job_id).where(ResourceLock.job_id.is_not(None)),
        select(CheckpointItem.job_id).where(CheckpointItem.job_id.is_not(None),
                                            CheckpointItem.status.not_in(SETTLED_ITEM)),
        select(Restore.job_id).where(Restore.job_id.is_not(None), Restore.status == "in_progress"),
    )


def prune_jobs(sessions: sessionmaker[Session], older_than: datetime) -> int:
    """Delete finished jobs whose ``finished_at`` is before ``older_than`` (naive UTC) and that nothing
    references; in batches of :data:`BATCH`, each its own transaction. Returns how many were deleted."""
    total = 0
    while True:
        conds = [Job.status.in_(FINISHED), Job.finished_at.is_not(None), Job.finished_at < older_than,
                 *[Job.id.not_in(q) for q in _referenced_job_ids()]]
        with transaction(sessions) as session:
            ids = list(session.scalars(select(Job.id).where(*conds).order_by(Job.finished_at).limit(BATCH)))
            if ids:
                # the conditions again: a job could have been re-referenced since the select
                session.execute(delete(Job).where(Job.id.in_(ids), *conds).execution_options(
                    synchronize_session=False))
        total += len(ids)
        if len(ids) < BATCH:
            return total


def change_tokens_in_use(session: Session) -> dict[str, set[str]]:
    """``{volume_id: {change tokens}}`` a future incremental backup (or a running one) may use as its base."""
    needed: dict[str, set[str]] = {}
    rows = session.execute(
        select(VolumeBackup.source_volume_id, VolumeBackup.change_token)
        .join(CheckpointItem, CheckpointItem.id == VolumeBackup.checkpoint_item_id)
        .where(VolumeBackup.change_token.is_not(None), VolumeBackup.status.not_in(("deleted", "error")),
               CheckpointItem.status.not_in(("deleted", "error")))
    )
    for volume_id, token in rows:
        needed.setdefault(volume_id, set()).add(token)
    for (state,) in session.execute(select(Job.state).where(Job.kind == "backup", Job.status.in_(RUNNABLE))):
        for volume_id, tokens in change_tokens_of(state).items():
            needed.setdefault(volume_id, set()).update(tokens)
    return needed


def collect_garbage(bank: Bank, interval: float, grace: float, now: float | None = None) -> GCReport | None:
    """``bank.gc(grace)`` when the last GC of ``bank`` ended ``interval`` seconds or more before ``now`` (POSIX
    time, default the real time) or never; returns its :class:`~opencsbs.bank.gc.GCReport`, or None when not
    due (or ``interval`` <= 0). Logs the outcome at INFO (a skipped sweep at WARNING)."""
    if interval <= 0:
        return None
    last = bank.store.head("gc/finished")
    now = time.time() if now is None else now
    if last is not None and last.mtime > now - interval:
        return None
    report = bank.gc(grace_seconds=grace)
    if report.skipped_reason:
        log.warning("bank gc: nothing swept: %s", report.skipped_reason)
    else:
        log.info("bank gc: %d chunks (%d bytes) freed, %d bytes reclaimable after the grace period of %.0f s, "
                 "%d stale leases and %d stale GC markers removed, in %.1f s", report.deleted_chunks,
                 report.freed_bytes, report.reclaimable_bytes, grace, report.stale_leases, report.stale_gc_markers,
                 report.seconds)
    return report


@dataclass(frozen=True)
class HousekeepingReport:
    """What one pass removed: ``jobs`` rows, ``change_logs`` pieces of change tracking; ``gc``: the bank's
    garbage collection report when one ran (``None``: not due, disabled, or failed: see the log)."""

    jobs: int
    change_logs: int
    gc: GCReport | None = None


def housekeep(runtime: Runtime, now: datetime | None = None) -> HousekeepingReport:
    """One housekeeping pass over ``runtime`` at ``now`` (naive UTC, default the real time)."""
    now = now or utcnow()
    days = runtime.settings.engine.job_retention_days
    jobs = prune_jobs(runtime.sessions, now - timedelta(days=days)) if days > 0 else 0
    with runtime.sessions() as session:
        needed = change_tokens_in_use(session)
    logs = runtime.driver.prune_change_tracking(needed) if isinstance(runtime.driver, DataPath) else 0
    if jobs or logs:
        log.info("housekeeping: %d finished jobs and %d change logs removed", jobs, logs)
    engine = runtime.settings.engine
    gc = None
    if engine.gc_interval_seconds > 0:
        try:
            gc = collect_garbage(runtime.bank, engine.gc_interval_seconds, engine.gc_grace_seconds)
        except Exception:  # noqa: BLE001 - the bank's failure must not stop the other housekeeping steps
            log.exception("bank gc failed during housekeeping")
    return HousekeepingReport(jobs, logs, gc)
