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
- **Backup tallies** (:func:`opencsbs.db.tallies.compact`): the per-project count rows the database triggers
  add on every backup change are folded into one row per status, so counts and quota checks stay a few rows.
- **Workers gone** (``db.models.WorkerSeen``): the heartbeat rows of workers silent for more than
  :data:`FORGET_WORKERS_AFTER` (a day: killed, never stopped cleanly) are deleted; until then ``opencsbs workers``
  lists them as ``silent``.
- **Bank space** (:func:`collect_garbage`): when the bank's last garbage collection (its ``gc/finished`` object,
  written by any process sharing the bank) ended more than ``engine.gc_interval_seconds`` ago, the pass runs
  ``Bank.gc(grace_seconds=engine.gc_grace_seconds)``, so the chunks of deleted, retention-deleted and failed
  backups are freed without an operator. It logs what it freed and what is reclaimable after the grace period.
- **Storage retention** (:func:`opencsbs.engine.retain.catch_up`): on a bank with S3 Object Lock, the backups of
  the projects whose retention locks were set or changed since the last pass get the retention those locks call
  for (backups written later get it when they are written).
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
from opencsbs.db.models import CheckpointItem, Job, ResourceLock, Restore, VolumeBackup, WorkerSeen
from opencsbs.db.tallies import compact
from opencsbs.engine.backup import change_tokens_of
from opencsbs.engine.jobs import RUNNABLE
from opencsbs.engine.retain import RetainReport, catch_up
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")

FINISHED = ("done", "failed")
#: checkpoint_item statuses after which its job is no longer needed
SETTLED_ITEM = ("available", "error", "deleted")
BATCH = 500
#: seconds of silence after which a worker's heartbeat row is deleted
FORGET_WORKERS_AFTER = 86400.0


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
    return run_gc(bank, grace)


def run_gc(bank: Bank, grace: float) -> GCReport:
    """``bank.gc(grace)`` now, its outcome logged in one line with its figures (INFO; a skipped sweep at
    WARNING)."""
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
    garbage collection report when one ran (``None``: not due, disabled, or failed: see the log);
    ``retained``: the storage retention pass on a bank with S3 Object Lock (``None``: no such bank, or failed)."""

    jobs: int
    change_logs: int
    gc: GCReport | None = None
    retained: RetainReport | None = None
    #: replica name -> its GC report (only replicas whose GC ran at this pass)
    replica_gc: dict[str, GCReport] | None = None


def housekeep(runtime: Runtime, now: datetime | None = None) -> HousekeepingReport:
    """One housekeeping pass over ``runtime`` at ``now`` (naive UTC, default the real time)."""
    now = now or utcnow()
    days = runtime.settings.engine.job_retention_days
    jobs = prune_jobs(runtime.sessions, now - timedelta(days=days)) if days > 0 else 0
    with runtime.sessions() as session:
        needed = change_tokens_in_use(session)
    logs = runtime.driver.prune_change_tracking(needed) if isinstance(runtime.driver, DataPath) else 0
    with transaction(runtime.sessions) as session:
        gone = session.execute(delete(WorkerSeen).where(
            WorkerSeen.seen_at < now - timedelta(seconds=FORGET_WORKERS_AFTER))).rowcount
    with transaction(runtime.sessions) as session:
        folded = compact(session)
    if jobs or logs or gone:
        log.info("housekeeping: %d finished jobs, %d change logs and %d workers silent for a day removed", jobs,
                 logs, gone)
    if folded:
        log.debug("housekeeping: %d backup tally rows folded", folded)
    engine = runtime.settings.engine
    gc = None
    if engine.gc_interval_seconds > 0 and not engine.gc_schedule:  # a gc_schedule: engine/bank_checks.py
        try:
            gc = collect_garbage(runtime.bank, engine.gc_interval_seconds, engine.gc_grace_seconds)
        except Exception:  # noqa: BLE001 - the bank's failure must not stop the other housekeeping steps
            log.exception("bank gc failed during housekeeping")
    retained = None
    try:
        retained = catch_up(runtime)
    except Exception:  # noqa: BLE001 - as the GC: the other steps ran, the next pass tries again
        log.exception("storage retention failed during housekeeping")
    replica_gc = _replica_gc(runtime) if engine.gc_interval_seconds > 0 else {}
    return HousekeepingReport(jobs, logs, gc, retained, replica_gc)


def _replica_gc(runtime: Runtime) -> dict[str, GCReport]:
    """The garbage collection of each replica bank (docs/replication.md), on the primary's schedule: frees the
    chunks of copies the replicas' retention removed. A replica that cannot be opened or swept is logged by name
    only (never its endpoint or credentials) and tried at the next pass."""
    from opencsbs.bank import open_bank

    engine = runtime.settings.engine
    out: dict[str, GCReport] = {}
    for replica in runtime.settings.replicas:
        try:
            bank = open_bank(runtime.settings, replica.name)
        except Exception as exc:  # noqa: BLE001
            log.warning("replica %s gc: cannot open it: %s", replica.name, type(exc).__name__)
            continue
        try:
            report = collect_garbage(bank, engine.gc_interval_seconds, engine.gc_grace_seconds)
            if report is not None:
                out[replica.name] = report
        except Exception as exc:  # noqa: BLE001
            log.warning("replica %s gc failed: %s", replica.name, type(exc).__name__)
        finally:
            bank.close()
    return out
