"""Retention locks and legal holds as use cases: set, change, remove and list locks; place, release and list
holds; the audit trail; and the check every data-removing path makes (``deletion_refusal``).

Rules in ``core.locks``; tables ``retention_locks``, ``legal_holds``, ``lock_audit``; routes in
``api.routes.locks``; user documentation docs/locks.md. Every change of a lock or hold writes one
``lock_audit`` row in the same transaction.

Errors (CSBSError): CSBS.8101 / 8102 (409, a backup kept by a lock or hold), CSBS.8103 (409, compliance lock
past its cooling-off period), CSBS.8104 (403, weakening a governance lock without
``csbs:locks:bypass_governance``), CSBS.8105 / 8106 (404, unknown lock / hold), CSBS.8107 (409, hold already
released), CSBS.3000 (404, unknown policy), CSBS.3001 (404, unknown backup), CSBS.9001 (bad parameters).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencsbs.auth.base import Principal
from opencsbs.core import codes
from opencsbs.core import locks as rules
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.listing import page_anchor
from opencsbs.core.timeutil import parse_wire_ts, utcnow, wire_ts
from opencsbs.db.base import transaction
from opencsbs.db.locks import lock_facts, refusal, rule_backup, rule_hold, rule_lock
from opencsbs.db.models import CheckpointItem, LegalHold, LockAudit, Policy, RetentionLock
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.locks")

BYPASS_RULE = "csbs:locks:bypass_governance"
#: backup tag rules of tag_management (as ``service.backups.validate_backup_params``)
TAG_KEY = re.compile(r"[A-Za-z0-9_-]{1,36}")
TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{0,43}")
#: page size of a list without ``limit``
DEFAULT_LIMIT = 1000


# --- shapes -------------------------------------------------------------------------------------------------


def lock_to_wire(row: RetentionLock, now: datetime | None = None) -> dict[str, Any]:
    """``{"id", "project_id", "policy_id", "mode", "min_retention_days", "max_retention_days",
    "cooling_off_hours", "cooling_off_until", "immutable", "created_by", "created_at", "updated_at"}``."""
    lock = rule_lock(row)
    return {
        "id": row.id, "project_id": row.project_id, "policy_id": row.policy_id, "mode": row.mode,
        "min_retention_days": row.min_retention_days, "max_retention_days": row.max_retention_days,
        "cooling_off_hours": row.cooling_off_hours,
        "cooling_off_until": wire_ts(lock.cooling_off_until) if row.mode == rules.COMPLIANCE else None,
        "immutable": lock.immutable(now or utcnow()),
        "created_by": row.created_by, "created_at": wire_ts(row.created_at), "updated_at": wire_ts(row.updated_at),
    }


def hold_to_wire(row: LegalHold) -> dict[str, Any]:
    """``{"id", "project_id", "name", "reason", "checkpoint_item_ids", "tag", "policy_id", "created_after",
    "created_before", "status" (active|released), "created_by", "created_at", "released_at", "released_by"}``."""
    return {
        "id": row.id, "project_id": row.project_id, "name": row.name, "reason": row.reason,
        "checkpoint_item_ids": list(row.item_ids) if row.item_ids is not None else None,
        "tag": {"key": row.tag_key, "value": row.tag_value or ""} if row.tag_key is not None else None,
        "policy_id": row.policy_id, "created_after": wire_ts(row.created_after),
        "created_before": wire_ts(row.created_before),
        "status": "released" if row.released_at is not None else "active",
        "created_by": row.created_by, "created_at": wire_ts(row.created_at),
        "released_at": wire_ts(row.released_at), "released_by": row.released_by,
    }


def audit_to_wire(row: LockAudit) -> dict[str, Any]:
    """``{"id", "at", "action", "target_id", "actor", "actor_project", "bypass", "detail"}``."""
    return {"id": row.id, "at": wire_ts(row.at), "action": row.action, "target_id": row.target_id,
            "actor": row.actor, "actor_project": row.actor_project, "bypass": row.bypass,
            "detail": dict(row.detail or {})}


def _audit(session: Session, principal: Principal, project_id: str, action: str, target_id: str,
           detail: dict, bypass: bool = False) -> None:
    session.add(LockAudit(project_id=project_id, at=utcnow(), action=action, target_id=target_id,
                          actor=principal.user_id or "", actor_project=principal.project_id or "",
                          bypass=bypass, detail=detail))
    log.info("project %s: %s %s by %s (project %r)%s", project_id, action, target_id, principal.user_id,
             principal.project_id, " with governance bypass" if bypass else "")


def _check_policy(session: Session, project_id: str, policy_id: str | None) -> None:
    if policy_id is None:
        return
    policy = session.get(Policy, policy_id)
    if policy is None or policy.project_id != project_id:
        raise CSBSError(codes.POLICY_NOT_FOUND)


# --- the check of every data-removing path ------------------------------------------------------------------


def deletion_refusal(session: Session, project_id: str, items: Sequence[CheckpointItem],
                     now: datetime | None = None) -> CSBSError | None:
    """The error for the first of ``items`` that a legal hold or a retention lock keeps at ``now`` (None: all
    may be deleted). Called inside the delete's transaction, so a lock set meanwhile is seen."""
    if not items:
        return None
    now = now or utcnow()
    locks, holds = lock_facts(session, project_id)
    if not locks and not holds:
        return None
    for item in items:
        error = refusal(rules.deletion_verdict(rule_backup(item), locks, holds, now), item.id)
        if error is not None:
            return error
    return None


def kept_backups(runtime: Runtime, project_id: str, item_ids: Sequence[str],
                 now: datetime | None = None) -> dict[str, CSBSError]:
    """Of ``item_ids`` (the project's backups), those a hold or lock keeps at ``now``: ``{id: error}``.
    Retention runs skip them."""
    now = now or utcnow()
    out: dict[str, CSBSError] = {}
    with runtime.sessions() as session:
        locks, holds = lock_facts(session, project_id)
        if not locks and not holds:
            return out
        for start in range(0, len(item_ids), 500):
            for item in session.scalars(select(CheckpointItem).where(
                    CheckpointItem.id.in_(list(item_ids[start:start + 500])))):
                error = refusal(rules.deletion_verdict(rule_backup(item), locks, holds, now), item.id)
                if error is not None:
                    out[item.id] = error
    return out


def kept_copies(runtime: Runtime, project_id: str, copies: Sequence[tuple[str, str, datetime]],
                now: datetime | None = None) -> dict[str, CSBSError]:
    """Of ``copies`` (``(copy_id, checkpoint_item_id, copied_at)`` of the project's backups on one replica
    bank), those a hold or lock keeps on that bank at ``now`` (:func:`opencsbs.core.locks.copy_deletion_verdict`:
    a lock counts from the copy's arrival): ``{copy_id: error}``. The replica's retention skips them."""
    now = now or utcnow()
    out: dict[str, CSBSError] = {}
    with runtime.sessions() as session:
        locks, holds = lock_facts(session, project_id)
        if not locks and not holds:
            return out
        items = {i.id: i for i in session.scalars(select(CheckpointItem).where(
            CheckpointItem.id.in_(sorted({item_id for _c, item_id, _t in copies}))))}
        for copy_id, item_id, copied_at in copies:
            item = items.get(item_id)
            if item is None:
                continue
            verdict = rules.copy_deletion_verdict(rule_backup(item), copied_at, locks, holds, now)
            error = refusal(verdict, item_id)
            if error is not None:
                out[copy_id] = error
    return out


def backup_retention(runtime: Runtime, project_id: str, item_id: str) -> dict[str, Any]:
    """Why backup ``item_id`` can or cannot be deleted now: ``{"checkpoint_item_id", "deletable", "reason"
    (null|legal_hold|retention_lock), "hold_id", "lock_id", "mode", "locked_until", "holds": [ids in force],
    "locks": [ids covering it]}``. 404 CSBS.3001 for an unknown (or deleted) backup."""
    now = utcnow()
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        if item is None or item.project_id != project_id or item.status == "deleted":
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
        locks, holds = lock_facts(session, project_id)
        backup = rule_backup(item)
    verdict = rules.deletion_verdict(backup, locks, holds, now)
    return {
        "checkpoint_item_id": item_id, "deletable": verdict.deletable, "reason": verdict.reason,
        "hold_id": verdict.hold_id, "lock_id": verdict.lock_id, "mode": verdict.mode,
        "locked_until": wire_ts(verdict.until),
        "holds": [h.id for h in holds if rules.hold_covers(h, backup)],
        "locks": [lk.id for lk in locks if rules.lock_covers(lk, backup) and rules.locked_until(lk, backup) > now],
    }


# --- locks --------------------------------------------------------------------------------------------------


def _get_lock(session: Session, project_id: str, lock_id: str, for_update: bool = False) -> RetentionLock:
    stmt = select(RetentionLock).where(RetentionLock.id == lock_id, RetentionLock.project_id == project_id)
    row = session.scalars(stmt.with_for_update() if for_update else stmt).first()
    if row is None:
        raise CSBSError(codes.LOCK_NOT_FOUND, lock_id)
    return row


def create_lock(runtime: Runtime, principal: Principal, project_id: str, *, mode: str, min_retention_days: int,
                max_retention_days: int | None = None, policy_id: str | None = None,
                cooling_off_hours: int | None = None) -> dict[str, Any]:
    """Set a lock on the project's backups (or ``policy_id``'s); returns its wire dict. Audited
    (``lock.create``). Raises CSBS.9001 (mode, days, hours), CSBS.3000 (unknown policy)."""
    if mode not in rules.MODES:
        raise invalid(f"mode must be one of {', '.join(rules.MODES)}")
    problem = rules.validate_days(min_retention_days, max_retention_days)
    if problem:
        raise invalid(f"{problem}")
    hours = rules.DEFAULT_COOLING_OFF_HOURS if cooling_off_hours is None else cooling_off_hours
    if not 0 <= hours <= rules.MAX_COOLING_OFF_HOURS:
        raise invalid(f"cooling_off_hours must be 0 to {rules.MAX_COOLING_OFF_HOURS}")
    with transaction(runtime.sessions) as session:
        _check_policy(session, project_id, policy_id)
        now = utcnow()
        row = RetentionLock(project_id=project_id, policy_id=policy_id, mode=mode,
                            min_retention_days=min_retention_days, max_retention_days=max_retention_days,
                            cooling_off_hours=hours, created_by=principal.user_id or "", created_at=now,
                            updated_at=now)
        session.add(row)
        session.flush()
        wire = lock_to_wire(row, now)
        _audit(session, principal, project_id, "lock.create", row.id, {"after": wire})
        return wire


def list_locks(runtime: Runtime, project_id: str) -> list[dict[str, Any]]:
    """The project's locks, oldest first."""
    with runtime.sessions() as session:
        now = utcnow()
        rows = session.scalars(select(RetentionLock).where(RetentionLock.project_id == project_id)
                               .order_by(RetentionLock.created_at, RetentionLock.id))
        return [lock_to_wire(r, now) for r in rows]


def get_lock(runtime: Runtime, project_id: str, lock_id: str) -> dict[str, Any]:
    """One lock; 404 CSBS.8105."""
    with runtime.sessions() as session:
        return lock_to_wire(_get_lock(session, project_id, lock_id))


def _apply_change(runtime: Runtime, principal: Principal, project_id: str, lock_id: str,
                  change: rules.Change) -> dict[str, Any] | None:
    with transaction(runtime.sessions) as session:
        row = _get_lock(session, project_id, lock_id, for_update=True)
        lock, now = rule_lock(row), utcnow()
        may_bypass = runtime.enforcer.allowed(principal, BYPASS_RULE)
        why = rules.change_refusal(lock, change, now, may_bypass)
        if why == "immutable":
            raise CSBSError(codes.LOCK_IMMUTABLE, lock_id, wire_ts(lock.cooling_off_until))
        if why == "governance_bypass":
            raise CSBSError(codes.GOVERNANCE_BYPASS_DENIED, lock_id, BYPASS_RULE)
        bypass = lock.mode == rules.GOVERNANCE and rules.weakens(lock, change)
        before = lock_to_wire(row, now)
        if change.remove:
            session.delete(row)
            _audit(session, principal, project_id, "lock.remove", lock_id, {"before": before}, bypass)
            return None
        if change.mode is not None:
            row.mode = change.mode
        if change.min_retention_days is not None:
            row.min_retention_days = change.min_retention_days
        if change.max_retention_days is not None:
            row.max_retention_days = change.max_retention_days
        problem = rules.validate_days(row.min_retention_days, row.max_retention_days)
        if problem:
            raise invalid(f"{problem}")
        row.updated_at = now
        session.flush()
        after = lock_to_wire(row, now)
        _audit(session, principal, project_id, "lock.update", lock_id, {"before": before, "after": after}, bypass)
        return after


def update_lock(runtime: Runtime, principal: Principal, project_id: str, lock_id: str, *,
                mode: str | None = None, min_retention_days: int | None = None,
                max_retention_days: int | None = None) -> dict[str, Any]:
    """Change a lock's mode or days. Strengthening is always allowed; weakening (shorter minimum, compliance →
    governance) of a governance lock needs ``csbs:locks:bypass_governance`` (403 CSBS.8104), of a compliance
    lock past its cooling-off period is refused to everybody (409 CSBS.8103). Audited (``lock.update``)."""
    if mode is not None and mode not in rules.MODES:
        raise invalid(f"mode must be one of {', '.join(rules.MODES)}")
    change = rules.Change(mode=mode, min_retention_days=min_retention_days, max_retention_days=max_retention_days)
    result = _apply_change(runtime, principal, project_id, lock_id, change)
    assert result is not None
    return result


def remove_lock(runtime: Runtime, principal: Principal, project_id: str, lock_id: str) -> None:
    """Remove a lock: a governance lock needs ``csbs:locks:bypass_governance`` (403 CSBS.8104), a compliance
    lock only during its cooling-off period (409 CSBS.8103 after). Audited (``lock.remove``)."""
    _apply_change(runtime, principal, project_id, lock_id, rules.Change(remove=True))


# --- holds --------------------------------------------------------------------------------------------------


@dataclass
class HoldSelector:
    """What a hold keeps (all given criteria must match; at least one is required)."""

    checkpoint_item_ids: list[str] | None = None
    tag_key: str | None = None
    tag_value: str | None = None
    policy_id: str | None = None
    created_after: str | None = None
    created_before: str | None = None


def _ts(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_wire_ts(value)
    except ValueError:
        raise invalid(f"{what} {value!r} is not a time like 2026-12-05T07:00:00") \
            from None


def create_hold(runtime: Runtime, principal: Principal, project_id: str, name: str, reason: str,
                sel: HoldSelector) -> dict[str, Any]:
    """Place a legal hold; returns its wire dict. Audited (``hold.create``). Raises CSBS.9001 (no criterion,
    bad times), CSBS.3001 (a listed backup the project does not have), CSBS.3000 (unknown policy)."""
    if not 1 <= len(name) <= 255:
        raise invalid("name must be 1 to 255 characters")
    if sel.tag_key is not None and not (TAG_KEY.fullmatch(sel.tag_key) and TAG_VALUE.fullmatch(sel.tag_value or "")):
        raise invalid("tag key must be 1 to 36 and its value at most 43 letters, "
                      "digits, '_' or '-'")
    if sel.checkpoint_item_ids is not None and len(sel.checkpoint_item_ids) > 1000:
        raise invalid("at most 1000 checkpoint_item_ids")
    after, before = _ts(sel.created_after, "created_after"), _ts(sel.created_before, "created_before")
    ids = list(dict.fromkeys(sel.checkpoint_item_ids)) if sel.checkpoint_item_ids is not None else None
    if ids is None and sel.tag_key is None and sel.policy_id is None and after is None and before is None:
        raise invalid("a hold needs checkpoint_item_ids, tag, policy_id, "
                      "created_after or created_before")
    if ids is not None and not ids:
        raise invalid("checkpoint_item_ids must not be empty")
    if after is not None and before is not None and after > before:
        raise invalid("created_after is later than created_before")
    with transaction(runtime.sessions) as session:
        _check_policy(session, project_id, sel.policy_id)
        if ids is not None:
            found = set(session.scalars(select(CheckpointItem.id).where(
                CheckpointItem.id.in_(ids), CheckpointItem.project_id == project_id,
                CheckpointItem.status != "deleted")))
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, ",".join(unknown))
        row = LegalHold(project_id=project_id, name=name, reason=reason, item_ids=ids, tag_key=sel.tag_key,
                        tag_value=sel.tag_value if sel.tag_key is not None else None, policy_id=sel.policy_id,
                        created_after=after, created_before=before, created_by=principal.user_id or "",
                        created_at=utcnow())
        session.add(row)
        session.flush()
        wire = hold_to_wire(row)
        _audit(session, principal, project_id, "hold.create", row.id, {"after": wire})
        return wire


def list_holds(runtime: Runtime, project_id: str, status: str | None = None) -> list[dict[str, Any]]:
    """The project's holds, oldest first; ``status`` active | released filters."""
    if status not in (None, "active", "released"):
        raise invalid("status must be active or released")
    with runtime.sessions() as session:
        stmt = select(LegalHold).where(LegalHold.project_id == project_id)
        if status == "active":
            stmt = stmt.where(LegalHold.released_at.is_(None))
        elif status == "released":
            stmt = stmt.where(LegalHold.released_at.is_not(None))
        return [hold_to_wire(r) for r in session.scalars(stmt.order_by(LegalHold.created_at, LegalHold.id))]


def _get_hold(session: Session, project_id: str, hold_id: str, for_update: bool = False) -> LegalHold:
    stmt = select(LegalHold).where(LegalHold.id == hold_id, LegalHold.project_id == project_id)
    row = session.scalars(stmt.with_for_update() if for_update else stmt).first()
    if row is None:
        raise CSBSError(codes.HOLD_NOT_FOUND, hold_id)
    return row


def get_hold(runtime: Runtime, project_id: str, hold_id: str) -> dict[str, Any]:
    """One hold; 404 CSBS.8106."""
    with runtime.sessions() as session:
        return hold_to_wire(_get_hold(session, project_id, hold_id))


def release_hold(runtime: Runtime, principal: Principal, project_id: str, hold_id: str) -> dict[str, Any]:
    """Release a hold (kept, as ``released``); 409 CSBS.8107 when already released. Audited
    (``hold.release``)."""
    with transaction(runtime.sessions) as session:
        row = _get_hold(session, project_id, hold_id, for_update=True)
        if row.released_at is not None:
            raise CSBSError(codes.HOLD_RELEASED, hold_id)
        row.released_at, row.released_by = utcnow(), principal.user_id or ""
        session.flush()
        wire = hold_to_wire(row)
        _audit(session, principal, project_id, "hold.release", hold_id, {"after": wire})
        return wire


# --- audit --------------------------------------------------------------------------------------------------


def list_audit(runtime: Runtime, project_id: str, marker: int | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """The project's audit records, oldest first, after record id ``marker``, at most ``limit`` (default 1000).
    400 CSBS.9001 for a marker that is not one of the project's records."""
    with runtime.sessions() as session:
        stmt = select(LockAudit).where(LockAudit.project_id == project_id)
        if marker is not None:
            page_anchor(session.scalars(select(LockAudit.id).where(LockAudit.id == marker,
                                                                   LockAudit.project_id == project_id)).first(),
                        marker)
            stmt = stmt.where(LockAudit.id > marker)
        return [audit_to_wire(r) for r in session.scalars(stmt.order_by(LockAudit.id).limit(limit or DEFAULT_LIMIT))]
