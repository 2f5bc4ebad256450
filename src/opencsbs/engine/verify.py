"""The verify job (target: verify run id): re-read and re-hash every chunk of the selected backups, record the
result per backup, and mark every backup of the project that needs a damaged or missing chunk (docs/verify.md).

Steps (:data:`STEPS`, run in this order; each ends with :meth:`~opencsbs.engine.jobs.JobHandle.commit`):

``start``  choose the backups: the run's selector (ids, policy, or every settled backup of the project), minus
           those verified ``ok`` within ``outdated_after_days`` (PBS's ``outdated-after``) → ``check``
``check``  read each chosen backup's bank indexes, re-read every chunk they need once
           (:func:`opencsbs.bank.verify.check_chunks`); then read the indexes of the project's other backups and
           find every one that needs a bad chunk; record it all in one transaction → done

What a damaged backup looks like afterwards: its ``backup_checks`` row reads ``verify_result: damaged`` with the
chunks, and its CSBS status is ``error`` with fail code CSBS.8203 and a reason naming the chunks (fail op
``verify``), so a CSBS client sees it is no longer restorable. A later run that finds such a backup sound again
(e.g. a chunk restored from a copy of the bank) puts it back to ``available``.

The job's state: ``{"verify": [item ids], "skipped": [item ids]}``. :func:`fail_verify` ends the run ``error``
with the reason; it changes no backup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.bank.errors import ChunkDamaged, IndexNotFound
from opencsbs.bank.verify import check_chunks, index_chunk_lengths
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.lifecycle import ItemStatus
from opencsbs.core.timeutil import utcnow
from opencsbs.db.models import BackupCheck, CheckpointItem, VerifyRun, VolumeBackup
from opencsbs.engine.jobs import JobHandle
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")

#: fail_op written on a backup a verify job or drill found damaged
FAIL_OP = "verify"


def run_verify(runtime: Runtime, job: JobHandle) -> None:
    """Run a verify job from its current step to the end."""
    for step, run in STEPS.items():
        if job.step == step:
            run(runtime, job)


def checkable(item: CheckpointItem) -> bool:
    """A backup a verify job or drill looks at: ``available``, or ``error`` because a check found it damaged."""
    return item.status == ItemStatus.AVAILABLE or (item.status == ItemStatus.ERROR and item.fail_op == FAIL_OP)


def _choose(runtime: Runtime, job: JobHandle) -> None:
    """Step ``start``: the backups to verify and those skipped as verified recently → ``check``."""
    with runtime.sessions() as session:
        run = session.get(VerifyRun, job.target_id)
        sel = run.selector or {}
        query = select(CheckpointItem).where(CheckpointItem.project_id == run.project_id)
        if sel.get("checkpoint_item_ids"):
            query = query.where(CheckpointItem.id.in_(sel["checkpoint_item_ids"]))
        if sel.get("policy_id"):
            query = query.where(CheckpointItem.policy_id == sel["policy_id"])
        items = [i for i in session.scalars(query.order_by(CheckpointItem.created_at, CheckpointItem.id))
                 if checkable(i)]
        fresh: set[str] = set()
        if run.outdated_after_days is not None:
            since = utcnow() - timedelta(days=run.outdated_after_days)
            rows = session.scalars(select(BackupCheck).where(
                BackupCheck.checkpoint_item_id.in_([i.id for i in items]), BackupCheck.verify_result == "ok",
                BackupCheck.last_verified_at >= since))
            fresh = {r.checkpoint_item_id for r in rows}
    chosen = [i.id for i in items if i.id not in fresh]
    skipped = [i.id for i in items if i.id in fresh]

    def apply(session: Session) -> None:
        run = session.get(VerifyRun, job.target_id)
        run.status = "running"

    job.commit("check", {"verify": chosen, "skipped": skipped}, apply)


def _indexes(session: Session, item_ids: list[str]) -> dict[str, list[str]]:
    """checkpoint_item id → the bank index names of its volume backups."""
    out: dict[str, list[str]] = {i: [] for i in item_ids}
    for vb in session.scalars(select(VolumeBackup).where(VolumeBackup.checkpoint_item_id.in_(item_ids))):
        if vb.index_name:
            out[vb.checkpoint_item_id].append(vb.index_name)
    return out


def read_needs(bank, names: list[str]) -> tuple[dict[str, int], list[dict]]:
    """The chunks (address → plaintext length) the indexes ``names`` need, and the problems of unreadable indexes
    (``{"chunk": None, "index", "problem": "damaged"|"missing", "reason"}``)."""
    lengths: dict[str, int] = {}
    problems: list[dict] = []
    for name in names:
        try:
            idx = bank.read_index(name)
        except IndexNotFound:
            problems.append({"chunk": None, "index": name, "problem": "missing", "reason": "index not found"})
            continue
        except ChunkDamaged as exc:
            problems.append({"chunk": None, "index": name, "problem": "damaged", "reason": exc.reason})
            continue
        lengths.update(index_chunk_lengths(idx))
    return lengths, problems


def _check(runtime: Runtime, job: JobHandle) -> None:
    """Step ``check``: re-read every chunk of the chosen backups; find every backup that needs a bad one → done."""
    bank = runtime.bank
    chosen: list[str] = list(job.state.get("verify") or [])
    with runtime.sessions() as session:
        run = session.get(VerifyRun, job.target_id)
        project_id = run.project_id
        names = _indexes(session, chosen)
        taken = set(chosen)
        others = [i.id for i in session.scalars(select(CheckpointItem).where(
            CheckpointItem.project_id == project_id)) if checkable(i) and i.id not in taken]
        other_names = _indexes(session, others)
    # per backup: the chunks it needs, and its unreadable indexes
    needs: dict[str, set[str]] = {}
    item_problems: dict[str, list[dict]] = {}
    lengths: dict[str, int] = {}
    for item_id, idx_names in names.items():
        job.check()
        item_lengths, problems = read_needs(bank, idx_names)
        needs[item_id] = set(item_lengths)
        item_problems[item_id] = problems
        lengths.update(item_lengths)
    verdicts = check_chunks(bank, lengths, abort=job.check)
    bad = {addr: v for addr, v in verdicts.items() if v.problem}
    chunk_problems = [{"chunk": addr, "index": None, "problem": v.problem, "reason": v.reason}
                      for addr, v in sorted(bad.items())]
    for item_id, need in needs.items():
        item_problems[item_id].extend(p for p in chunk_problems if p["chunk"] in need)
    # the project's other backups that need a bad chunk (read their indexes only)
    if bad:
        for item_id, idx_names in other_names.items():
            job.check()
            item_lengths, _ = read_needs(bank, idx_names)
            hit = [p for p in chunk_problems if p["chunk"] in item_lengths]
            if hit:
                item_problems[item_id] = hit
    affected = sorted(i for i, p in item_problems.items() if p)
    now = utcnow()

    def apply(session: Session) -> None:
        for item_id, problems in item_problems.items():
            item = session.get(CheckpointItem, item_id)
            if item is None:
                continue
            record(session, item, problems, job.target_id, now)
        run = session.get(VerifyRun, job.target_id)
        run.status = "damaged" if affected else "ok"
        run.verified = chosen
        run.skipped = list(job.state.get("skipped") or [])
        run.affected = affected
        run.problems = [p for p in chunk_problems] + [p for ps in item_problems.values() for p in ps
                                                      if p["chunk"] is None]
        run.chunks_checked = len(verdicts)
        run.bytes_checked = sum(v.size for v in verdicts.values())
        run.message = (f"{len(affected)} backup(s) need damaged or missing data: {', '.join(affected)}"
                       if affected else f"{len(chosen)} backup(s) verified, {len(run.skipped)} skipped")
        run.finished_at = now

    if affected:
        log.warning("verify run %s: %d backup(s) need damaged or missing data: %s", job.target_id, len(affected),
                    ", ".join(affected))
    job.commit("done", None, apply, status="done")


def _describe(problems: list[dict]) -> str:
    parts = []
    for p in problems[:5]:
        what = f"chunk {p['chunk']}" if p["chunk"] else f"index {p['index']}"
        parts.append(f"{what} {p['problem']} ({p['reason']})")
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return "; ".join(parts) + more


def check_row(session: Session, item: CheckpointItem) -> BackupCheck:
    """The ``backup_checks`` row of ``item`` (made when absent)."""
    row = session.get(BackupCheck, item.id)
    if row is None:
        row = BackupCheck(checkpoint_item_id=item.id, project_id=item.project_id, resource_id=item.resource_id,
                          verify_detail=[])
        session.add(row)
    return row


def mark_damaged(item: CheckpointItem, reason: str) -> None:
    """Put a damaged backup in CSBS status ``error`` with fail code CSBS.8203 (a backup being restored or deleted
    keeps its status: its job ends it; the fail fields still say why)."""
    error = CSBSError(codes.BACKUP_DAMAGED, item.id, reason)
    if item.status in (ItemStatus.AVAILABLE, ItemStatus.ERROR):
        item.status = ItemStatus.ERROR
    item.fail_code = error.error_code
    item.fail_reason = error.error_msg
    item.fail_op = FAIL_OP


def record(session: Session, item: CheckpointItem, problems: list[dict], run_id: str, now) -> None:
    """Record one backup's verify result (``problems`` empty: sound) and mark or clear it."""
    row = check_row(session, item)
    row.last_verified_at = now
    row.verify_result = "damaged" if problems else "ok"
    row.verify_detail = problems
    row.verify_run_id = run_id
    if not checkable(item):
        return  # deleted or being deleted while the run read it: nothing to mark
    if problems:
        mark_damaged(item, _describe(problems))
    elif item.status == ItemStatus.ERROR and item.fail_op == FAIL_OP:
        item.status = ItemStatus.AVAILABLE
        item.fail_code = None
        item.fail_reason = ""
        item.fail_op = ""


# --- the failure path ---------------------------------------------------------------------------------------


def fail_verify(runtime: Runtime, job: JobHandle, error: CSBSError) -> None:
    """End a verify job as failed: the run reads ``error`` with the reason; no backup changes."""

    def apply(session: Session) -> None:
        run = session.get(VerifyRun, job.target_id)
        if run is None:
            return
        run.status = "error"
        run.message = error.error_msg
        run.finished_at = utcnow()

    job.commit("failed", None, apply, status="failed", error=error.error_msg)


#: the verify job's steps in the order they run: ``job.step`` → the function that runs it
STEPS: dict[str, Callable[[Runtime, JobHandle], None]] = {
    "start": _choose,
    "check": _check,
}
