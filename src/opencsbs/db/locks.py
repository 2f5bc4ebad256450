"""The facts the lock rules (``core.locks``) judge, read from the tables ``retention_locks``, ``legal_holds`` and
``checkpoint_items``, and the check every data-removing path makes: the use cases (``service.locks``,
``service.backups``) before they accept a delete, and the delete job (``engine.delete``) again before it removes
anything, so a lock or hold set in between still stops it.

Errors returned (never raised): CSBS.8101 (409, a backup under a retention lock), CSBS.8102 (409, under a legal
hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.core import codes
from opencsbs.core import locks as rules
from opencsbs.core.errors import CSBSError
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.models import CheckpointItem, LegalHold, RetentionLock


def rule_lock(row: RetentionLock) -> rules.Lock:
    """The rules' view of a ``retention_locks`` row."""
    return rules.Lock(id=row.id, mode=row.mode, min_retention_days=row.min_retention_days,
                      created_at=row.created_at, policy_id=row.policy_id,
                      max_retention_days=row.max_retention_days, cooling_off_hours=row.cooling_off_hours)


def rule_hold(row: LegalHold) -> rules.Hold:
    """The rules' view of a ``legal_holds`` row."""
    return rules.Hold(id=row.id, item_ids=frozenset(row.item_ids) if row.item_ids is not None else None,
                      tag=(row.tag_key, row.tag_value or "") if row.tag_key is not None else None,
                      policy_id=row.policy_id, created_after=row.created_after,
                      created_before=row.created_before, released_at=row.released_at)


def rule_backup(item: CheckpointItem) -> rules.Backup:
    """The rules' view of a backup (checkpoint_item): id, creation time, policy, tags."""
    tags = {str(t.get("key")): str(t.get("value", "")) for t in item.tags or [] if isinstance(t, dict)}
    return rules.Backup(id=item.id, created_at=item.created_at, policy_id=item.policy_id, tags=tags)


def lock_facts(session: Session, project_id: str) -> tuple[list[rules.Lock], list[rules.Hold]]:
    """The project's locks and its holds in force."""
    locks = [rule_lock(r) for r in session.scalars(select(RetentionLock).where(
        RetentionLock.project_id == project_id))]
    holds = [rule_hold(r) for r in session.scalars(select(LegalHold).where(
        LegalHold.project_id == project_id, LegalHold.released_at.is_(None)))]
    return locks, holds


def refusal(verdict: rules.Verdict, item_id: str) -> CSBSError | None:
    """The client's error for a verdict that keeps backup ``item_id`` (None when it may go)."""
    if verdict.deletable:
        return None
    if verdict.reason == "legal_hold":
        return CSBSError(codes.BACKUP_HELD, item_id, verdict.hold_id)
    return CSBSError(codes.BACKUP_LOCKED, item_id, verdict.mode, verdict.lock_id, wire_ts(verdict.until))


def refusals(session: Session, project_id: str, items: Sequence[CheckpointItem],
             now: datetime | None = None) -> dict[str, CSBSError]:
    """Of ``items`` (backups of ``project_id``), those a legal hold or a retention lock keeps at ``now``:
    ``{item id: error}`` (empty: all may be deleted)."""
    out: dict[str, CSBSError] = {}
    if not items:
        return out
    now = now or utcnow()
    locks, holds = lock_facts(session, project_id)
    if not locks and not holds:
        return out
    for item in items:
        error = refusal(rules.deletion_verdict(rule_backup(item), locks, holds, now), item.id)
        if error is not None:
            out[item.id] = error
    return out
