"""Copies of backups to second banks (replicas) and replication rules: the use cases behind
``/opencsbs/v1/{project_id}/checkpoint_items/{id}/copies`` and ``opencsbs backup copy`` / ``opencsbs replication``
(docs/replication.md). A copy is made by a durable ``copy`` job (:mod:`opencsbs.engine.copy`).

A copy's public shape (:func:`copy_to_wire`)::

    {"id", "checkpoint_item_id", "destination": replica name, "destination_location": "local" | "s3",
     "status": "waiting" | "copying" | "available" | "error" | "deleting" | "deleted" (removed from the replica
     by its rule's retention), "size": bytes of the volumes, "sent_bytes": stored bytes sent, "created_at",
     "finished_at": ISO 8601 or null, "error": text, "deleted_at": ISO 8601 or null}

No answer or error carries a replica's credentials or its endpoint: only its name and its kind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.retention import RetentionRule, validate_rule
from opencsbs.core.timeutil import wire_ts
from opencsbs.db.base import transaction
from opencsbs.db.models import BackupCopy, CheckpointItem, Policy, ReplicationRule
from opencsbs.engine.jobs import enqueue
from opencsbs.runtime import Runtime

#: copy statuses that count as "the copy is there or on its way" (no second copy is started for them)
LIVE = ("waiting", "copying", "available")
#: copies removed from their replica (by the rule's retention, service/replica_retention.py): history only
GONE = ("deleting", "deleted")


def copy_to_wire(row: BackupCopy, runtime: Runtime | None = None) -> dict[str, Any]:
    """The public shape of one copy (module doc)."""
    kind = ""
    if runtime is not None:
        replica = runtime.settings.replica(row.replica)
        kind = replica.backend if replica is not None else ""
    return {"id": row.id, "checkpoint_item_id": row.checkpoint_item_id, "destination": row.replica,
            "destination_location": kind, "status": row.status, "size": int(row.size_bytes or 0),
            "sent_bytes": int(row.sent_bytes or 0), "created_at": wire_ts(row.created_at),
            "finished_at": wire_ts(row.finished_at) if row.finished_at else None, "error": row.error or "",
            "deleted_at": wire_ts(row.deleted_at) if row.deleted_at else None}


def _check_replica(runtime: Runtime, replica: str) -> None:
    if runtime.settings.replica(replica) is None:
        known = ", ".join(r.name for r in runtime.settings.replicas) or "none configured"
        raise invalid(f"unknown replica {replica!r} (replicas: {known})")


def request_copy(runtime: Runtime, project_id: str, item_id: str, replica: str, *,
                 rule_id: str | None = None, all_tenants: bool = False) -> dict[str, Any]:
    """Start copying the checkpoint_item ``item_id`` to ``replica``; the copy in its public shape.

    A copy already waiting, running or done for that replica is returned as is (no second job). Raises
    ``CSBSError`` CSBS.9001 (unknown replica), CSBS.3001 (no such item in the project), CSBS.4000 (the item is
    not ``available``)."""
    _check_replica(runtime, replica)
    with transaction(runtime.sessions) as session:
        item = session.get(CheckpointItem, item_id)
        if item is None or item.status == "deleted" or (not all_tenants and item.project_id != project_id):
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
        if item.status != "available":
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_AVAILABLE)
        row = session.scalars(select(BackupCopy).where(
            BackupCopy.checkpoint_item_id == item_id, BackupCopy.replica == replica,
            BackupCopy.status.in_(LIVE))).first()
        if row is None:
            row = BackupCopy(project_id=item.project_id, checkpoint_item_id=item_id, replica=replica,
                             status="waiting", rule_id=rule_id,
                             size_bytes=sum(int(vb.size_bytes or 0) for vb in item.volume_backups))
            session.add(row)
            session.flush()
            row.job_id = enqueue(session, "copy", item.project_id, row.id).id
        session.flush()
        return copy_to_wire(row, runtime)


def list_copies(runtime: Runtime, project_id: str, item_id: str, *, all_tenants: bool = False) -> list[dict]:
    """The copies of ``item_id``, oldest first. Raises CSBS.3001 for an unknown item."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        if item is None or (not all_tenants and item.project_id != project_id):
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
        rows = session.scalars(select(BackupCopy).where(BackupCopy.checkpoint_item_id == item_id)
                               .order_by(BackupCopy.created_at, BackupCopy.id)).all()
        return [copy_to_wire(r, runtime) for r in rows]


# --- rules: a policy's backups copied by themselves ----------------------------------------------------------


def _rule_to_wire(rule: ReplicationRule) -> dict[str, Any]:
    return {"id": rule.id, "project_id": rule.project_id, "policy_id": rule.policy_id, "replica": rule.replica,
            "max_backups": rule.max_backups, "retention_duration_days": rule.retention_duration_days}


def _check_limits(max_backups: int | None, retention_duration_days: int | None) -> None:
    validate_rule(RetentionRule(max_backups=max_backups, retention_duration_days=retention_duration_days))


def add_rule(runtime: Runtime, project_id: str, policy_id: str, replica: str, *, max_backups: int | None = None,
             retention_duration_days: int | None = None) -> dict[str, Any]:
    """Copy every backup of ``policy_id`` to ``replica`` once it is available, and keep the copies there by the
    rule's own ``max_backups`` (newest copies per server) and ``retention_duration_days`` (after a copy's arrival)
    (None, -1 or 0: no limit; :mod:`opencsbs.service.replica_retention`). Returns ``{"id", "project_id",
    "policy_id", "replica", "max_backups", "retention_duration_days"}``. Raises CSBS.9001 (unknown replica, rule
    exists, a limit out of -1..99999), CSBS.3000 (no such policy in the project)."""
    _check_replica(runtime, replica)
    _check_limits(max_backups, retention_duration_days)
    try:
        with transaction(runtime.sessions) as session:
            policy = session.get(Policy, policy_id)
            if policy is None or policy.project_id != project_id:
                raise CSBSError(codes.POLICY_NOT_FOUND)
            rule = ReplicationRule(project_id=project_id, policy_id=policy_id, replica=replica,
                                   max_backups=max_backups, retention_duration_days=retention_duration_days)
            session.add(rule)
            session.flush()
            return _rule_to_wire(rule)
    except IntegrityError:
        raise invalid(f"policy {policy_id} is already copied to replica {replica}") from None


def set_rule_retention(runtime: Runtime, rule_id: str, *, max_backups: int | None,
                       retention_duration_days: int | None, project_id: str | None = None) -> dict[str, Any]:
    """Change a rule's retention of copies (both values replace the old ones; None: no limit). Returns the rule
    (as :func:`add_rule`). Raises CSBS.9001 (unknown rule, a limit out of -1..99999)."""
    _check_limits(max_backups, retention_duration_days)
    with transaction(runtime.sessions) as session:
        rule = session.get(ReplicationRule, rule_id)
        if rule is None or (project_id is not None and rule.project_id != project_id):
            raise invalid(f"no replication rule {rule_id}")
        rule.max_backups, rule.retention_duration_days = max_backups, retention_duration_days
        return _rule_to_wire(rule)


def list_rules(runtime: Runtime, project_id: str | None = None) -> list[dict[str, Any]]:
    """The replication rules (of ``project_id``, or all), oldest first, each as :func:`add_rule` returns it plus
    its lag:

    - ``pending``: available backups of the policy with no copy on the replica yet (none, or only failed ones;
      a copy removed by the rule's retention counts as done);
    - ``copying``: copies waiting or running; ``failed``: backups whose last copy failed;
    - ``last_success``: when the newest successful copy ended (ISO 8601, null: none yet);
    - ``oldest_pending_since``: creation time of the oldest backup still pending (null: none), so that
      ``now - oldest_pending_since`` is how far the replica is behind;
    - ``sent_bytes``: stored bytes the rule's replica received for the policy's backups (all copies);
    - ``copies``: copies kept on the replica (available), ``removed``: copies its retention removed.
    """
    with runtime.sessions() as session:
        q = select(ReplicationRule).order_by(ReplicationRule.created_at, ReplicationRule.id)
        if project_id is not None:
            q = q.where(ReplicationRule.project_id == project_id)
        out = []
        for rule in session.scalars(q):
            items = dict(session.execute(select(CheckpointItem.id, CheckpointItem.created_at).where(
                CheckpointItem.policy_id == rule.policy_id, CheckpointItem.project_id == rule.project_id,
                CheckpointItem.status == "available")).all())
            copies = session.scalars(
                select(BackupCopy).join(CheckpointItem, CheckpointItem.id == BackupCopy.checkpoint_item_id)
                .where(BackupCopy.replica == rule.replica, CheckpointItem.policy_id == rule.policy_id,
                       CheckpointItem.project_id == rule.project_id)
                .order_by(BackupCopy.created_at, BackupCopy.id)).all()
            last: dict[str, BackupCopy] = {}
            for c in copies:
                last[c.checkpoint_item_id] = c
            done = {i for i, c in last.items() if c.status in ("available", *GONE)}
            busy = {i for i, c in last.items() if c.status in ("waiting", "copying")}
            failed = {i for i, c in last.items() if c.status == "error"}
            pending = [items[i] for i in items if i not in done and i not in busy]
            finished = [c.finished_at for c in copies if c.status in ("available", *GONE) and c.finished_at]
            out.append({**_rule_to_wire(rule), "pending": len(pending), "copying": len(busy),
                        "failed": len(failed & set(items)),
                        "last_success": wire_ts(max(finished)) if finished else None,
                        "oldest_pending_since": wire_ts(min(pending)) if pending else None,
                        "sent_bytes": sum(int(c.sent_bytes or 0) for c in copies),
                        "copies": sum(1 for c in last.values() if c.status == "available"),
                        "removed": sum(1 for c in last.values() if c.status in GONE)})
        return out


def delete_rule(runtime: Runtime, rule_id: str) -> None:
    """Drop a replication rule (copies made stay). Raises CSBS.9001 for an unknown rule."""
    with transaction(runtime.sessions) as session:
        rule = session.get(ReplicationRule, rule_id)
        if rule is None:
            raise invalid(f"no replication rule {rule_id}")
        session.delete(rule)


def enqueue_due_copies(runtime: Runtime, policy_id: str | None = None) -> int:
    """Start a copy for every available backup of a policy (``policy_id``, or every policy) with a replication
    rule that has no live copy on the rule's replica. The scheduler calls it with each retention pass of a policy
    (every ``retention_interval_hours`` and after each of its runs); ``opencsbs replication run`` on demand.
    Rules naming a replica no longer in the settings are skipped. Returns how many copies were started."""
    started = 0
    with runtime.sessions() as session:
        q = select(ReplicationRule)
        if policy_id is not None:
            q = q.where(ReplicationRule.policy_id == policy_id)
        rules = [(r.id, r.project_id, r.policy_id, r.replica) for r in session.scalars(q)]
    for rule_id, project_id, rule_policy, replica in rules:
        if runtime.settings.replica(replica) is None:
            continue
        with runtime.sessions() as session:
            have = set(session.scalars(select(BackupCopy.checkpoint_item_id).where(  # removed by the replica's
                BackupCopy.replica == replica, BackupCopy.status.in_((*LIVE, *GONE)))))  # retention: not again
            due = [i for i in session.scalars(select(CheckpointItem.id).where(
                CheckpointItem.policy_id == rule_policy, CheckpointItem.status == "available")) if i not in have]
        for item_id in due:
            try:
                request_copy(runtime, project_id, item_id, replica, rule_id=rule_id, all_tenants=True)
                started += 1
            except CSBSError:
                continue  # deleted or no longer available meanwhile
    return started


#: a copy's status → the CSBS ``copy_status`` vocabulary (querying_a_single_backup.rst: na, waiting_copy,
#: copying, success, fail)
WIRE_STATUS = {"waiting": "waiting_copy", "copying": "copying", "available": "success", "error": "fail"}


def copy_status(rows: list[BackupCopy]) -> str:
    """The checkpoint_item's ``copy_status`` from its copies: ``na`` (none, or only copies removed from their
    replica), else the state of the last copy started: ``waiting_copy``, ``copying``, ``success``, ``fail``."""
    rows = [r for r in rows if r.status not in GONE]
    if not rows:
        return "na"
    last = max(rows, key=lambda r: (r.created_at, r.id))
    return WIRE_STATUS.get(last.status, "na")


def replication_records(item: CheckpointItem, rows: list[BackupCopy]) -> list[dict[str, Any]]:
    """A checkpoint_item's ``replication_records``: one per copy, oldest first (docs/replication.md, "What a
    CSBS client sees"). The reference shows the key (an empty list, querying_backup_resources_by_tag.rst) but
    not its elements; their shape follows CBR's replication records::

        {"id", "created_at", "finished_at" (null until it ends),
         "source_backup_id", "source_checkpoint_id", "source_project_id",
         "destination_backup_id", "destination_checkpoint_id", "destination_project_id" (a copy keeps the
         backup's ids: the catalog record on the replica carries them),
         "destination_region": the replica's name,
         "status": waiting_copy | copying | success | fail | deleted (removed by the replica's retention),
         "extra_info": {"auto_trigger": made by a replication rule, "size": bytes of the volumes,
                        "sent_bytes": stored bytes sent, "fail_reason": text, "deleted_at": ISO 8601 or null}}
    """
    out = []
    for r in sorted(rows, key=lambda r: (r.created_at, r.id)):
        out.append({
            "id": r.id, "created_at": wire_ts(r.created_at),
            "finished_at": wire_ts(r.finished_at) if r.finished_at else None,
            "source_backup_id": item.id, "source_checkpoint_id": item.checkpoint_id,
            "source_project_id": item.project_id,
            "destination_backup_id": item.id, "destination_checkpoint_id": item.checkpoint_id,
            "destination_project_id": item.project_id, "destination_region": r.replica,
            "status": "deleted" if r.status in GONE else WIRE_STATUS.get(r.status, r.status),
            "extra_info": {"auto_trigger": r.rule_id is not None, "size": int(r.size_bytes or 0),
                           "sent_bytes": int(r.sent_bytes or 0), "fail_reason": r.error or "",
                           "deleted_at": wire_ts(r.deleted_at) if r.deleted_at else None},
        })
    return out
