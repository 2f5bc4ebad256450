"""Retention locks and legal holds: may this backup be deleted now, and may this lock be changed?

Pure rules (no I/O); ``service.locks`` gathers the facts and applies them. Modes as AWS Backup Vault Lock has
them (source: the AWS Backup developer guide, "AWS Backup Vault Lock"):

- ``governance``: a backup under the lock cannot be deleted before ``created_at + min_retention_days``; an admin
  holding the rule ``csbs:locks:bypass_governance`` may remove or shorten the lock (every such act audited);
- ``compliance``: the same protection, and nobody may delete such a backup early (no role, no retention rule);
  during its cooling-off period (``cooling_off_hours`` after creation, default 72, like Vault Lock's "grace
  time") the lock itself may still be removed or weakened by a caller allowed to write locks; after it the lock
  can only be made stronger.

A lock covers every backup of its project (``policy_id`` None) or of one policy. A legal hold covers the
backups it selects (ids, a tag, a policy, a creation-time range; all given criteria must match) until it is
released, whatever any lock or retention rule says. Times are naive UTC datetimes.

Each bank separately (docs/replication.md): a backup's copy on a replica bank is kept by the same locks and holds
as the backup on the primary, but a lock's clock runs from the copy's arrival on that bank
(:func:`copy_deletion_verdict`), so deleting one bank's copy never depends on, nor unlocks, another's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

GOVERNANCE = "governance"
COMPLIANCE = "compliance"
MODES = (GOVERNANCE, COMPLIANCE)
#: cooling-off period of a compliance lock when the request gives none (hours; AWS's minimum grace time)
DEFAULT_COOLING_OFF_HOURS = 72
#: upper bound of retention days (100 years) and cooling-off hours (1 year)
MAX_DAYS = 36500
MAX_COOLING_OFF_HOURS = 8760


@dataclass(frozen=True)
class Lock:
    """A retention lock. ``policy_id`` None: the whole project. ``max_retention_days`` optional (None)."""

    id: str
    mode: str
    min_retention_days: int
    created_at: datetime
    policy_id: str | None = None
    max_retention_days: int | None = None
    cooling_off_hours: int = DEFAULT_COOLING_OFF_HOURS

    @property
    def cooling_off_until(self) -> datetime:
        """End of the compliance cooling-off period (a governance lock has none that matters)."""
        return self.created_at + timedelta(hours=self.cooling_off_hours)

    def immutable(self, now: datetime) -> bool:
        """A compliance lock past its cooling-off period: it can no longer be removed or weakened."""
        return self.mode == COMPLIANCE and now >= self.cooling_off_until


@dataclass(frozen=True)
class Hold:
    """A legal hold; every criterion that is set must match (``None`` = any). ``released_at`` None: in force."""

    id: str
    item_ids: frozenset[str] | None = None
    tag: tuple[str, str] | None = None
    policy_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    released_at: datetime | None = None


@dataclass(frozen=True)
class Backup:
    """What the rules need of a backup (checkpoint_item): its id, creation time, policy and tags."""

    id: str
    created_at: datetime
    policy_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """Whether a backup may be deleted now. When not: ``reason`` ``"legal_hold"`` (``hold_id``) or
    ``"retention_lock"`` (``lock_id``, ``mode``, ``until`` the earliest time a delete is allowed)."""

    deletable: bool
    reason: str | None = None
    hold_id: str | None = None
    lock_id: str | None = None
    mode: str | None = None
    until: datetime | None = None


def lock_covers(lock: Lock, backup: Backup) -> bool:
    """Whether ``lock`` applies to ``backup`` (a project lock covers all, a policy lock its policy's)."""
    return lock.policy_id is None or lock.policy_id == backup.policy_id


def locked_until(lock: Lock, backup: Backup) -> datetime:
    """The time from which ``lock`` no longer keeps ``backup``: its creation + ``min_retention_days``."""
    return backup.created_at + timedelta(days=lock.min_retention_days)


def hold_covers(hold: Hold, backup: Backup) -> bool:
    """Whether ``hold`` is in force and selects ``backup``."""
    if hold.released_at is not None:
        return False
    if hold.item_ids is not None and backup.id not in hold.item_ids:
        return False
    if hold.tag is not None and backup.tags.get(hold.tag[0]) != hold.tag[1]:
        return False
    if hold.policy_id is not None and backup.policy_id != hold.policy_id:
        return False
    if hold.created_after is not None and backup.created_at < hold.created_after:
        return False
    if hold.created_before is not None and backup.created_at > hold.created_before:
        return False
    return True


def deletion_verdict(backup: Backup, locks: Iterable[Lock], holds: Iterable[Hold], now: datetime) -> Verdict:
    """May ``backup`` be deleted at ``now``? A legal hold in force decides first (no end time); then the lock
    that keeps the backup longest, compliance before governance at equal times. Nobody bypasses a verdict here:
    a governance lock is lifted by removing or shortening the lock itself (audited), never per delete."""
    for hold in holds:
        if hold_covers(hold, backup):
            return Verdict(False, "legal_hold", hold_id=hold.id)
    best: tuple[datetime, int, Lock] | None = None
    for lock in locks:
        if not lock_covers(lock, backup):
            continue
        until = locked_until(lock, backup)
        if until <= now:
            continue
        key = (until, 1 if lock.mode == COMPLIANCE else 0, lock)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        return Verdict(True)
    until, _, lock = best
    return Verdict(False, "retention_lock", lock_id=lock.id, mode=lock.mode, until=until)


def storage_retention(backup: Backup, locks: Iterable[Lock], now: datetime) -> tuple[str, datetime] | None:
    """The S3 Object Lock retention the objects of ``backup`` get (bank option ``s3_object_lock``): ``(mode,
    retain_until)`` with mode ``"COMPLIANCE"`` when any lock covering it is a compliance lock, else
    ``"GOVERNANCE"``, and retain_until the latest :func:`locked_until` of those locks; None when no lock keeps it
    after ``now``. One object has one retention, so the strongest mode and the longest time are combined (the
    storage may keep a backup longer, never shorter, than the locks do)."""
    covering = [lock for lock in locks if lock_covers(lock, backup) and locked_until(lock, backup) > now]
    if not covering:
        return None
    mode = "COMPLIANCE" if any(lock.mode == COMPLIANCE for lock in covering) else "GOVERNANCE"
    return mode, max(locked_until(lock, backup) for lock in covering)


def copy_deletion_verdict(backup: Backup, copied_at: datetime, locks: Iterable[Lock], holds: Iterable[Hold],
                          now: datetime) -> Verdict:
    """May the copy of ``backup`` that arrived on a replica bank at ``copied_at`` be removed from that bank at
    ``now``? A hold selects the copy as it selects the backup (its criteria read the backup: creation time, tags,
    policy); a lock keeps the copy ``min_retention_days`` after ``copied_at``, whatever the primary's copy does."""
    holds = list(holds)
    for hold in holds:
        if hold_covers(hold, backup):
            return Verdict(False, "legal_hold", hold_id=hold.id)
    return deletion_verdict(replace(backup, created_at=copied_at), locks, (), now)


@dataclass(frozen=True)
class Change:
    """A requested change of a lock: ``remove``, or new values (None = unchanged)."""

    remove: bool = False
    mode: str | None = None
    min_retention_days: int | None = None
    max_retention_days: int | None = None


def weakens(lock: Lock, change: Change) -> bool:
    """Whether ``change`` lets a backup go earlier: removal, a shorter minimum, compliance → governance."""
    if change.remove:
        return True
    if change.min_retention_days is not None and change.min_retention_days < lock.min_retention_days:
        return True
    return change.mode == GOVERNANCE and lock.mode == COMPLIANCE


def change_refusal(lock: Lock, change: Change, now: datetime, may_bypass_governance: bool) -> str | None:
    """Why ``change`` of ``lock`` is refused at ``now`` (None: allowed).

    ``"immutable"``: a compliance lock past its cooling-off period cannot be weakened or removed by anybody;
    ``"governance_bypass"``: weakening a governance lock needs the bypass permission; a compliance lock in its
    cooling-off period may be weakened by any caller allowed to write locks. Strengthening is always allowed.
    """
    if not weakens(lock, change):
        return None
    if lock.mode == COMPLIANCE:
        return "immutable" if lock.immutable(now) else None
    return None if may_bypass_governance else "governance_bypass"


def validate_days(min_days: int, max_days: int | None) -> str | None:
    """Why a lock's retention days are invalid (None: valid): min 1..MAX_DAYS, max ≥ min and ≤ MAX_DAYS."""
    if not 1 <= min_days <= MAX_DAYS:
        return f"min_retention_days must be 1 to {MAX_DAYS}"
    if max_days is not None and not min_days <= max_days <= MAX_DAYS:
        return f"max_retention_days must be at least min_retention_days ({min_days}) and at most {MAX_DAYS}"
    return None
