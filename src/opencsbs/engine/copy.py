"""The copy job (target: a :class:`~opencsbs.db.models.BackupCopy` id; state ``{"done": [index names],
"sent_bytes": int, "sent_chunks": int}``): copy one checkpoint_item's volume backups to a replica bank, and its
failure path (docs/replication.md).

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``  the copy ``waiting`` → ``copying`` → ``send``
``send``   for each volume backup's index not yet in ``done``: :func:`opencsbs.bank.replicate.copy_index` from the
           primary bank to the replica (only the chunks it lacks, verified, index last), then commit ``done``
           with it; when all are there the copy is ``available`` → done

A worker killed mid-``send`` leaves chunks on the replica but no index; the next worker resumes at ``send``,
skips the indexes already in ``done`` and, for the interrupted one, sends only the chunks still missing.
A replica that cannot be reached is a transient failure (:class:`~opencsbs.engine.jobs.Retry`): the job is tried
again later, up to ``engine.max_attempts``. :func:`fail_copy` ends it ``failed``: the copy reads ``error``.
Error texts name the replica and its location only, never its credentials.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from opencsbs.bank import BankError, ChunkDamaged, ChunkMissing, IndexNotFound, open_bank
from opencsbs.bank.errors import BankConfigError, BankKeyError
from opencsbs.bank.replicate import copy_index
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import BackupCopy, CheckpointItem
from opencsbs.engine._common import log
from opencsbs.engine.catalog import save_record_quietly
from opencsbs.engine.jobs import JobHandle, LeaseLost, Retry
from opencsbs.runtime import Runtime


def run_copy(runtime: Runtime, job: JobHandle) -> None:
    """Copy the job's checkpoint_item to its replica, step by step."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def _copy_row(session: Session, job: JobHandle) -> BackupCopy:
    row = session.get(BackupCopy, job.target_id)
    if row is None:
        raise CSBSError(codes.TASK_NOT_FOUND, message=f"copy {job.target_id} is gone")
    return row


def _start(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: the copy ``copying`` → ``send``."""

    def apply(session: Session) -> None:
        _copy_row(session, job).status = "copying"

    job.commit("send", {"done": [], "sent_bytes": 0, "sent_chunks": 0}, apply)


def _send(runtime: Runtime, job: JobHandle) -> None:
    """Step ``send``: the item's indexes to the replica, one commit per index; the copy ``available`` → done."""
    with runtime.sessions() as session:
        row = _copy_row(session, job)
        replica_name = row.replica
        row_item_id = row.checkpoint_item_id
        item = session.get(CheckpointItem, row.checkpoint_item_id)
        if item is None or item.status != "available":
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_AVAILABLE)
        names = [vb.index_name for vb in item.volume_backups if vb.index_name]
        size = sum(int(vb.size_bytes or 0) for vb in item.volume_backups)
    try:
        target = open_bank(runtime.settings, replica_name)
    except (BankConfigError, BankKeyError) as exc:
        raise CSBSError(codes.INTERNAL_ERROR, message=f"copy to replica {replica_name} failed: {exc}") from None
    except Exception as exc:  # unreachable endpoint, refused credentials: try again later
        raise Retry(f"replica {replica_name} cannot be opened: {type(exc).__name__}") from None
    try:
        for name in names:
            if name in job.state.get("done", []):
                continue
            job.check()
            try:
                stats = copy_index(runtime.bank, target, name, progress=lambda _d, _t: job.check())
            except LeaseLost:
                raise
            except (IndexNotFound, ChunkMissing, ChunkDamaged, BankKeyError) as exc:
                raise CSBSError(codes.INTERNAL_ERROR,
                                message=f"copy to replica {replica_name} failed: {exc}") from None
            except BankError:
                raise
            except Exception as exc:  # the replica (or the primary) stopped answering: resume later
                raise Retry(f"copy to replica {replica_name} interrupted: {type(exc).__name__}") from None
            log.info("copied %s to replica %s: %d chunks sent (%d bytes), %d present", name, replica_name,
                     stats.sent_chunks, stats.sent_bytes, stats.present_chunks)
            state = {"done": [*job.state.get("done", []), name],
                     "sent_bytes": int(job.state.get("sent_bytes", 0)) + stats.sent_bytes,
                     "sent_chunks": int(job.state.get("sent_chunks", 0)) + stats.sent_chunks}

            def progress(session: Session, state=state) -> None:
                row = _copy_row(session, job)
                row.sent_bytes, row.sent_chunks = state["sent_bytes"], state["sent_chunks"]

            job.commit("send", state, progress)
        save_record_quietly(runtime, target, row_item_id)
    finally:
        target.close()

    def apply(session: Session) -> None:
        row = _copy_row(session, job)
        row.status = "available"
        row.size_bytes = size
        row.sent_bytes = int(job.state.get("sent_bytes", 0))
        row.sent_chunks = int(job.state.get("sent_chunks", 0))
        row.finished_at = utcnow()
        row.error = ""

    job.commit("done", None, apply, status="done")


# --- the failure path ---------------------------------------------------------------------------------------


def fail_copy(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
    """End a copy job as failed: the copy reads ``error`` with the reason."""

    def apply(session: Session) -> None:
        row = session.get(BackupCopy, job.target_id)
        if row is not None:
            row.status = "error"
            row.error = error.error_msg
            row.finished_at = utcnow()

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


# --- removing a copy from its replica (the replica's retention, docs/replication.md) -------------------------


def remove_copy(runtime: Runtime, replica: str, item_id: str, index_names: list[str]) -> None:
    """Drop the copy of checkpoint_item ``item_id`` from the replica ``replica``: its indexes (``index_names``)
    and its catalog record; its chunks are freed by the replica's next garbage collection (housekeeping). Absent
    objects are ignored, so a removal cut short is simply done again. Raises :class:`BankError` (the replica
    cannot be reached: its name only, never its endpoint or credentials)."""
    from opencsbs.bank.catalog import delete_record

    try:
        target = open_bank(runtime.settings, replica)
    except Exception as exc:  # noqa: BLE001 - one line naming the replica, never its settings
        raise BankError(f"replica {replica} cannot be opened: {type(exc).__name__}") from None
    try:
        for name in index_names:
            target.delete_index(name)
        delete_record(target, item_id)
    except BankError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BankError(f"replica {replica}: removing the copy of {item_id} failed: {type(exc).__name__}") \
            from None
    finally:
        target.close()
    log.info("copy of %s removed from replica %s (%d indexes)", item_id, replica, len(index_names))


#: the copy's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _start,
    "send": _send,
}
