"""Retention of copies on a replica bank by their replication rule's own limits (docs/replication.md, "Copies
kept by their own retention").

A rule (:class:`~opencsbs.db.models.ReplicationRule`) may set ``max_backups`` (the N newest copies per server are
kept) and ``retention_duration_days`` (a copy is removed that many days after it arrived); None, -1 or 0 switch a
limit off (as a policy's, :mod:`opencsbs.core.retention`). The rule's copies are the ``available`` copies on its
replica of its policy's automatic backups, whoever started them; copies of manual backups are never removed by
retention. Whether the backup is still on the primary bank does not matter: each bank keeps its copy by its own
rule.

A copy a legal hold or a retention lock keeps *on that bank* is never removed
(:func:`opencsbs.service.locks.kept_copies`: a lock's clock runs from the copy's arrival on the replica). A
removed copy: status ``deleting`` (committed first), its indexes and catalog record dropped from the replica
(:func:`opencsbs.engine.copy.remove_copy`), then ``deleted`` with ``deleted_at``; the row stays as history (a
``replication_records`` entry with status ``deleted``), and the rule does not copy that backup again. A removal
cut short (the process died, the replica was unreachable) stays ``deleting`` and is finished by the next pass.
The replica's chunks are freed by its garbage collection (housekeeping).

Runs with each retention pass of the policy (the scheduler, after each run and every
``retention_interval_hours``) and on ``opencsbs replication run``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update

from opencsbs.bank import BankError
from opencsbs.core.retention import BackupInfo, RetentionRule, plan
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import BackupCopy, CheckpointItem, ReplicationRule
from opencsbs.engine.copy import remove_copy
from opencsbs.runtime import Runtime
from opencsbs.service import locks

log = logging.getLogger("opencsbs.replication")


@dataclass
class ReplicaRetentionReport:
    """One pass: ``removed`` copy ids (now ``deleted``), ``kept`` ``{copy_id: error code}`` of copies the rule
    would remove but a hold or lock keeps on their bank, ``failed`` ``{copy_id: reason}`` removals left
    ``deleting`` for the next pass."""

    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _limited(rule: ReplicationRule) -> bool:
    return any(v is not None and v > 0 for v in (rule.max_backups, rule.retention_duration_days))


def _finish(runtime: Runtime, copy_id: str, report: ReplicaRetentionReport) -> None:
    """Drop a ``deleting`` copy from its replica, then mark it ``deleted``."""
    with runtime.sessions() as session:
        row = session.get(BackupCopy, copy_id)
        if row is None or row.status != "deleting":
            return
        item = session.get(CheckpointItem, row.checkpoint_item_id)
        names = [vb.index_name for vb in item.volume_backups if vb.index_name] if item is not None else []
        replica, item_id = row.replica, row.checkpoint_item_id
    if runtime.settings.replica(replica) is None:
        report.failed[copy_id] = f"replica {replica} is no longer configured"
        return
    try:
        remove_copy(runtime, replica, item_id, names)
    except BankError as exc:
        log.warning("replica retention: copy %s of %s stays deleting: %s", copy_id, item_id, exc)
        report.failed[copy_id] = str(exc)
        return
    with transaction(runtime.sessions) as session:
        row = session.get(BackupCopy, copy_id)
        if row is not None:
            row.status = "deleted"
            row.deleted_at = utcnow()
    report.removed.append(copy_id)


def apply_replica_retention(runtime: Runtime, policy_id: str | None = None,
                            now: datetime | None = None) -> ReplicaRetentionReport:
    """Remove from their replicas the copies the rules of ``policy_id`` (or of every policy) no longer keep, and
    finish removals cut short (module doc). Rules naming a replica no longer in the settings are skipped."""
    now = now or utcnow()
    report = ReplicaRetentionReport()
    with runtime.sessions() as session:
        q = select(ReplicationRule)
        if policy_id is not None:
            q = q.where(ReplicationRule.policy_id == policy_id)
        rules = [r for r in session.scalars(q) if runtime.settings.replica(r.replica) is not None]
        session.expunge_all()
    for rule in rules:
        with runtime.sessions() as session:
            rows = session.execute(
                select(BackupCopy.id, BackupCopy.status, BackupCopy.checkpoint_item_id, BackupCopy.created_at,
                       BackupCopy.finished_at, CheckpointItem.resource_id)
                .join(CheckpointItem, CheckpointItem.id == BackupCopy.checkpoint_item_id)
                .where(BackupCopy.replica == rule.replica, CheckpointItem.policy_id == rule.policy_id,
                       CheckpointItem.project_id == rule.project_id, CheckpointItem.auto_trigger.is_(True),
                       BackupCopy.status.in_(("available", "deleting")))).all()
        unfinished = [r.id for r in rows if r.status == "deleting"]
        doomed: list[tuple[str, str, datetime]] = []
        if _limited(rule):
            per_server: dict[str, list[BackupInfo]] = defaultdict(list)
            arrived: dict[str, tuple[str, datetime]] = {}
            for r in rows:
                if r.status != "available":
                    continue
                when = r.finished_at or r.created_at
                per_server[r.resource_id].append(BackupInfo(r.id, when))
                arrived[r.id] = (r.checkpoint_item_id, when)
            limits = RetentionRule(max_backups=rule.max_backups, retention_duration_days=rule.retention_duration_days)
            for infos in per_server.values():
                doomed += [(cid, *arrived[cid]) for cid in sorted(plan(infos, limits, now)[1])]
        kept = locks.kept_copies(runtime, rule.project_id, doomed, now)
        for copy_id, why in sorted(kept.items()):
            log.info("replica retention of rule %s: copy %s kept on replica %s: %s", rule.id, copy_id, rule.replica,
                     why.error_msg)
            report.kept[copy_id] = why.error_code
        for copy_id, _item, _when in doomed:
            if copy_id in kept:
                continue
            with transaction(runtime.sessions) as session:
                claimed = session.execute(update(BackupCopy).where(
                    BackupCopy.id == copy_id, BackupCopy.status == "available").values(status="deleting")).rowcount
            if claimed:
                unfinished.append(copy_id)
        for copy_id in unfinished:
            _finish(runtime, copy_id, report)
    return report
