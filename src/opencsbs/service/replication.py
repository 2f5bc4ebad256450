"""Copies of backups to second banks (replicas) and replication rules: the use cases behind
``/opencsbs/v1/{project_id}/checkpoint_items/{id}/copies`` and ``opencsbs backup copy`` / ``opencsbs replication``
(docs/replication.md). A copy is made by a durable ``copy`` job (:mod:`opencsbs.engine.copy`).

A copy's public shape (:func:`copy_to_wire`)::

    {"id", "checkpoint_item_id", "destination": replica name, "destination_location": "local" | "s3",
     "status": "waiting" | "copying" | "available" | "error", "size": bytes of the volumes,
     "sent_bytes": stored bytes sent, "created_at", "finished_at": ISO 8601 or null, "error": text}

No answer or error carries a replica's credentials or its endpoint: only its name and its kind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.timeutil import wire_ts
from opencsbs.db.base import transaction
from opencsbs.db.models import BackupCopy, CheckpointItem, Policy, ReplicationRule
from opencsbs.engine.jobs import enqueue
from opencsbs.runtime import Runtime

#: copy statuses that count as "the copy is there or on its way" (no second copy is started for them)
LIVE = ("waiting", "copying", "available")


def copy_to_wire(row: BackupCopy, runtime: Runtime | None = None) -> dict[str, Any]:
    """The public shape of one copy (module doc)."""
    kind = ""
    if runtime is not None:
        replica = runtime.settings.replica(row.replica)
        kind = replica.backend if replica is not None else ""
    return {"id": row.id, "checkpoint_item_id": row.checkpoint_item_id, "destination": row.replica,
            "destination_location": kind, "status": row.status, "size": int(row.size_bytes or 0),
            "sent_bytes": int(row.sent_bytes or 0), "created_at": wire_ts(row.created_at),
            "finished_at": wire_ts(row.finished_at) if row.finished_at else None, "error": row.error or ""}


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


def add_rule(runtime: Runtime, project_id: str, policy_id: str, replica: str) -> dict[str, Any]:
    """Copy every backup of ``policy_id`` to ``replica`` once it is available. Raises CSBS.9001 (unknown
    replica, rule exists), CSBS.3000 (no such policy in the project)."""
    _check_replica(runtime, replica)
    try:
        with transaction(runtime.sessions) as session:
            policy = session.get(Policy, policy_id)
            if policy is None or policy.project_id != project_id:
                raise CSBSError(codes.POLICY_NOT_FOUND)
            rule = ReplicationRule(project_id=project_id, policy_id=policy_id, replica=replica)
            session.add(rule)
            session.flush()
            return {"id": rule.id, "policy_id": policy_id, "replica": replica}
    except IntegrityError:
        raise invalid(f"policy {policy_id} is already copied to replica {replica}") from None


def list_rules(runtime: Runtime, project_id: str | None = None) -> list[dict[str, Any]]:
    """The replication rules (of ``project_id``, or all), each with its lag: ``pending`` backups of the
    policy not yet copied, ``last_success`` (ISO 8601 or null) and ``sent_bytes``."""
    with runtime.sessions() as session:
        q = select(ReplicationRule).order_by(ReplicationRule.created_at)
        if project_id is not None:
            q = q.where(ReplicationRule.project_id == project_id)
        out = []
        for rule in session.scalars(q):
            items = session.scalars(select(CheckpointItem.id).where(
                CheckpointItem.policy_id == rule.policy_id, CheckpointItem.status == "available")).all()
            copies = session.scalars(select(BackupCopy).where(
                BackupCopy.replica == rule.replica, BackupCopy.checkpoint_item_id.in_(items))).all() if items else []
            done = {c.checkpoint_item_id for c in copies if c.status == "available"}
            finished = [c.finished_at for c in copies if c.status == "available" and c.finished_at]
            out.append({"id": rule.id, "project_id": rule.project_id, "policy_id": rule.policy_id,
                        "replica": rule.replica, "pending": len(set(items) - done),
                        "last_success": wire_ts(max(finished)) if finished else None,
                        "sent_bytes": sum(int(c.sent_bytes or 0) for c in copies)})
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
            have = set(session.scalars(select(BackupCopy.checkpoint_item_id).where(
                BackupCopy.replica == replica, BackupCopy.status.in_(LIVE))))
            due = [i for i in session.scalars(select(CheckpointItem.id).where(
                CheckpointItem.policy_id == rule_policy, CheckpointItem.status == "available")) if i not in have]
        for item_id in due:
            try:
                request_copy(runtime, project_id, item_id, replica, rule_id=rule_id, all_tenants=True)
                started += 1
            except CSBSError:
                continue  # deleted or no longer available meanwhile
    return started


def copy_status(rows: list[BackupCopy]) -> str:
    """The checkpoint_item's ``copy_status`` from its copies: ``na`` (none), ``waiting_copy``, ``copying``,
    ``copy_finished``, ``copy_failed`` (the last copy started decides)."""
    if not rows:
        return "na"
    last = max(rows, key=lambda r: (r.created_at, r.id))
    return {"waiting": "waiting_copy", "copying": "copying", "available": "copy_finished",
            "error": "copy_failed"}.get(last.status, "na")
