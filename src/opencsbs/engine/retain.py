"""The storage's own retention (S3 Object Lock, bank option ``s3_object_lock``, docs/bank.md) on backups written
before the retention locks that now cover them: ``opencsbs bank retain`` (:func:`apply_storage_retention`) and
the housekeeping pass (:func:`catch_up`).

A backup gets its retention when it is written (``engine.backup``); a lock set or made longer afterwards is
enforced by opencsbs at once, and by the storage once this has run. Idempotent: a retention already as long and as
strong is left alone (one HEAD per object), a shorter one extended. :func:`catch_up` only visits the projects
whose locks were set or changed since its last pass (recorded in the bank's ``retain/applied`` object).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from opencsbs.core.locks import storage_retention
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.locks import lock_facts, rule_backup
from opencsbs.db.models import CheckpointItem, RetentionLock
from opencsbs.runtime import Runtime

log = logging.getLogger("opencsbs.engine")
#: the bank object recording when :func:`catch_up` last ran (``{"at": naive UTC ISO time}``)
MARKER = "retain/applied"


@dataclass
class RetainReport:
    """``enforced``: whether the bank's store enforces retention at all (False: nothing was done);
    ``backups``: backups under a lock whose objects were retained; ``objects``: objects (indexes and chunks,
    a chunk once per backup that names it) whose retention was checked or extended; ``errors``: one line per
    backup that could not be retained (its index unreadable)."""

    enforced: bool = False
    backups: int = 0
    objects: int = 0
    errors: list[str] = field(default_factory=list)
    #: ``{checkpoint_item_id: [mode, retain-until (wire time)]}``
    retained: dict[str, list[str]] = field(default_factory=dict)


def apply_storage_retention(runtime: Runtime, project_id: str | None = None,
                            changed_since: datetime | None = None) -> RetainReport:
    """Give the objects of every available backup of ``project_id`` (None: every project with a lock; with
    ``changed_since``, only the projects with a lock created or changed at or after it) the storage retention its
    locks call for now (:func:`opencsbs.core.locks.storage_retention`)."""
    from opencsbs.bank.errors import BankError

    report = RetainReport()
    store = getattr(runtime.bank, "store", None)
    report.enforced = bool(getattr(store, "enforces_retention", False))
    if not report.enforced:
        return report
    now = utcnow()
    todo: list[tuple[str, tuple[str, object], list[str]]] = []
    with runtime.sessions() as session:
        if project_id is None:
            stmt = select(RetentionLock.project_id)
            if changed_since is not None:
                stmt = stmt.where((RetentionLock.updated_at >= changed_since)
                                  | (RetentionLock.created_at >= changed_since))
            projects = sorted(set(session.scalars(stmt)))
        else:
            projects = [project_id]
        for pid in projects:
            locks, _holds = lock_facts(session, pid)
            if not locks:
                continue
            for item in session.scalars(select(CheckpointItem).where(
                    CheckpointItem.project_id == pid, CheckpointItem.status == "available")):
                keep = storage_retention(rule_backup(item), locks, now)
                names = [vb.index_name for vb in item.volume_backups if vb.index_name]
                if keep is not None and names:
                    todo.append((item.id, keep, names))
    for item_id, (mode, until), names in todo:
        try:
            report.objects += sum(runtime.bank.retain_index(name, mode, until) for name in names)
        except BankError as exc:
            report.errors.append(f"backup {item_id}: {exc}")
            continue
        report.backups += 1
        report.retained[item_id] = [mode, wire_ts(until)]
    return report


def catch_up(runtime: Runtime) -> RetainReport | None:
    """Housekeeping: :func:`apply_storage_retention` for the projects whose locks were set or changed since the
    last pass (all projects with a lock on the first one), then record this pass's start in :data:`MARKER`.
    None when the bank enforces no retention."""
    from opencsbs.bank.errors import ObjectNotFound

    store = getattr(runtime.bank, "store", None)
    if not getattr(store, "enforces_retention", False):
        return None
    started = utcnow()
    since = None
    try:
        since = datetime.fromisoformat(json.loads(store.get(MARKER))["at"])
    except (ObjectNotFound, ValueError, KeyError, TypeError):
        pass
    report = apply_storage_retention(runtime, changed_since=since)
    if not report.errors:
        store.put(MARKER, json.dumps({"at": started.isoformat()}).encode())
    if report.backups or report.errors:
        log.info("storage retention: %d backups under retention locks, %d objects checked or extended%s",
                 report.backups, report.objects, f"; {len(report.errors)} failed" if report.errors else "")
    return report
