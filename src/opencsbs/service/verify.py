"""Verify jobs and restore drills as use cases: start a verify run or a drill, list and show them, a backup's
verification record, the project's damaged backups, and schedules of runs (docs/verify.md).

Jobs: ``engine.verify`` (kind ``verify``), ``engine.drill`` (kind ``drill``); tables ``verify_runs``, ``drills``,
``backup_checks``, ``check_schedules`` (migration ``0005``); routes in ``api.routes.verify``; CLI
``opencsbs verify`` / ``opencsbs drill``.

Errors (CSBSError): CSBS.8201 / 8202 / 8205 (404, unknown verify run / drill / schedule), CSBS.8204 (409, no
backup to drill), CSBS.3001 (404, unknown backup), CSBS.3000 (404, unknown policy), CSBS.6000 (400, a
``server_id`` the project neither has nor has backups of), CSBS.9001 (bad parameters).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import Session

from opencsbs.auth.base import Principal
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.lifecycle import ItemStatus
from opencsbs.core.listing import page_anchor
from opencsbs.core.schedule import parse_pattern
from opencsbs.core.timeutil import parse_wire_ts, utcnow, wire_ts
from opencsbs.db.base import transaction
from opencsbs.db.models import BackupCheck, CheckpointItem, CheckSchedule, Drill, Policy, VerifyRun
from opencsbs.engine.jobs import enqueue
from opencsbs.engine.verify import checkable
from opencsbs.runtime import Runtime
from opencsbs.service.servers import project_server

log = logging.getLogger("opencsbs.verify")

DRILL_CHOICES = ("latest", "random", "id")
#: most ids a verify run may name
MAX_IDS = 1000
#: page size of a list without ``limit``
DEFAULT_LIMIT = 100


# --- shapes -------------------------------------------------------------------------------------------------


def run_to_wire(row: VerifyRun) -> dict[str, Any]:
    """``{"id", "project_id", "status" (pending|running|ok|damaged|error), "checkpoint_item_ids", "policy_id",
    "outdated_after_days", "verified", "skipped", "affected", "problems", "chunks_checked", "bytes_checked",
    "message", "schedule_id", "created_by", "created_at", "finished_at"}``."""
    sel = row.selector or {}
    return {
        "id": row.id, "project_id": row.project_id, "status": row.status,
        "checkpoint_item_ids": sel.get("checkpoint_item_ids"), "policy_id": sel.get("policy_id"),
        "outdated_after_days": row.outdated_after_days, "verified": list(row.verified or []),
        "skipped": list(row.skipped or []), "affected": list(row.affected or []),
        "problems": list(row.problems or []), "chunks_checked": row.chunks_checked,
        "bytes_checked": row.bytes_checked, "message": row.message, "schedule_id": row.schedule_id,
        "created_by": row.created_by, "created_at": wire_ts(row.created_at), "finished_at": wire_ts(row.finished_at),
    }


def drill_to_wire(row: Drill) -> dict[str, Any]:
    """``{"id", "project_id", "checkpoint_item_id", "resource_id", "resource_name", "choice", "status"
    (pending|running|passed|failed|error), "rto_seconds", "bytes_restored", "volumes", "message", "schedule_id",
    "created_by", "created_at", "finished_at"}``."""
    return {
        "id": row.id, "project_id": row.project_id, "checkpoint_item_id": row.checkpoint_item_id,
        "resource_id": row.resource_id, "resource_name": row.resource_name, "choice": row.choice,
        "status": row.status, "rto_seconds": row.rto_seconds, "bytes_restored": row.bytes_restored,
        "volumes": list(row.volumes or []), "message": row.message, "schedule_id": row.schedule_id,
        "created_by": row.created_by, "created_at": wire_ts(row.created_at), "finished_at": wire_ts(row.finished_at),
    }


def check_to_wire(item: CheckpointItem, row: BackupCheck | None) -> dict[str, Any]:
    """A backup's verification record: ``{"checkpoint_item_id", "resource_id", "status" (its CSBS status),
    "fail_reason", "last_verified_at", "verify_result" (null|ok|damaged), "verify_run_id", "problems",
    "last_drill_at", "drill_result" (null|passed|failed), "drill_id", "last_good_drill_at",
    "drill_rto_seconds"}``."""
    return {
        "checkpoint_item_id": item.id, "resource_id": item.resource_id, "status": item.status,
        "fail_reason": item.fail_reason or "",
        "last_verified_at": wire_ts(row.last_verified_at) if row else None,
        "verify_result": row.verify_result if row else None,
        "verify_run_id": row.verify_run_id if row else None,
        "problems": list(row.verify_detail or []) if row else [],
        "last_drill_at": wire_ts(row.last_drill_at) if row else None,
        "drill_result": row.drill_result if row else None,
        "drill_id": row.drill_id if row else None,
        "last_good_drill_at": wire_ts(row.last_good_drill_at) if row else None,
        "drill_rto_seconds": row.drill_rto_seconds if row else None,
    }


def schedule_to_wire(row: CheckSchedule) -> dict[str, Any]:
    """``{"id", "project_id", "kind" (verify|drill), "pattern", "start_time", "next_run_at", "parameters",
    "created_by", "created_at"}``."""
    return {"id": row.id, "project_id": row.project_id, "kind": row.kind, "pattern": row.pattern,
            "start_time": wire_ts(row.start_time), "next_run_at": wire_ts(row.next_run_at),
            "parameters": dict(row.parameters or {}), "created_by": row.created_by,
            "created_at": wire_ts(row.created_at)}


# --- checks -------------------------------------------------------------------------------------------------


def _check_policy(session: Session, project_id: str, policy_id: str | None) -> None:
    if policy_id is None:
        return
    policy = session.get(Policy, policy_id)
    if policy is None or policy.project_id != project_id:
        raise CSBSError(codes.POLICY_NOT_FOUND)


def _item(session: Session, project_id: str, item_id: str) -> CheckpointItem:
    item = session.get(CheckpointItem, item_id)
    if item is None or item.project_id != project_id or item.status == ItemStatus.DELETED:
        raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
    return item


def _check_server(runtime: Runtime, session: Session, project_id: str, server_id: str,
                  auth_token: str | None = None) -> None:
    """400 CSBS.6000 "server do not exist" (check_protectable's answer for an unknown server) unless the project
    has backups of ``server_id`` (any status: a deleted server's backups can still be drilled) or the cloud shows
    the server in the project. Another project's server is unknown (never revealed)."""
    has_backups = session.scalars(select(CheckpointItem.id).where(CheckpointItem.project_id == project_id,
                                                                  CheckpointItem.resource_id == server_id)
                                  .limit(1)).first()
    if has_backups is None and project_server(runtime, project_id, server_id, auth_token) is None:
        raise CSBSError(codes.SERVER_NOT_FOUND)


def _days(value: int | None) -> int | None:
    if value is not None and not (0 <= value <= 36500):
        raise invalid(f"outdated_after_days {value} is not between 0 and 36500")
    return value


# --- verify runs --------------------------------------------------------------------------------------------


def new_verify_run(session: Session, created_by: str, project_id: str, *,
                   checkpoint_item_ids: Sequence[str] | None = None, policy_id: str | None = None,
                   outdated_after_days: int | None = None, schedule_id: str | None = None) -> VerifyRun:
    """Add a pending verify run and its job in the caller's transaction."""
    run = VerifyRun(project_id=project_id, status="pending",
                    selector={"checkpoint_item_ids": list(checkpoint_item_ids) if checkpoint_item_ids else None,
                              "policy_id": policy_id},
                    outdated_after_days=outdated_after_days, verified=[], skipped=[], affected=[], problems=[],
                    chunks_checked=0, bytes_checked=0, message="", schedule_id=schedule_id,
                    created_by=created_by, created_at=utcnow())
    session.add(run)
    session.flush()
    run.job_id = enqueue(session, "verify", project_id, run.id).id
    return run


def start_verify(runtime: Runtime, principal: Principal, project_id: str, *,
                 checkpoint_item_ids: Sequence[str] | None = None, policy_id: str | None = None,
                 outdated_after_days: int | None = None) -> dict[str, Any]:
    """Queue a verify run of the project's backups (all settled ones, or ``checkpoint_item_ids``, or
    ``policy_id``'s), skipping those verified sound within ``outdated_after_days``. Returns the run (``pending``).
    404 CSBS.3001 (a listed backup unknown), 404 CSBS.3000 (unknown policy), 400 CSBS.9001."""
    _days(outdated_after_days)
    ids = list(dict.fromkeys(checkpoint_item_ids or []))
    if len(ids) > MAX_IDS:
        raise invalid(f"at most {MAX_IDS} checkpoint_item_ids")
    with transaction(runtime.sessions) as session:
        _check_policy(session, project_id, policy_id)
        for item_id in ids:
            _item(session, project_id, item_id)
        run = new_verify_run(session, principal.user_id or "", project_id, checkpoint_item_ids=ids or None,
                             policy_id=policy_id, outdated_after_days=outdated_after_days)
        out = run_to_wire(run)
    log.info("project %s: verify run %s queued by %s", project_id, out["id"], principal.user_id)
    return out


def _before(model: type[VerifyRun] | type[Drill], anchor: VerifyRun | Drill):
    """"Sorts after ``anchor``" in the lists' order ``created_at, id`` both descending: one row-value comparison
    ``(created_at, id) < (:created_at, :id)`` (the keyset, as for checkpoint_items; no OFFSET)."""
    return (tuple_(model.created_at, model.id)
            < tuple_(literal(anchor.created_at, model.created_at.type), literal(anchor.id, model.id.type)))


def list_verify_runs(runtime: Runtime, project_id: str, limit: int | None = None,
                     marker: str | None = None) -> list[dict[str, Any]]:
    """The project's verify runs, newest first (``created_at``, then ``id``, both descending), after run id
    ``marker``, at most ``limit`` (default 100). 400 CSBS.9001 for a marker that is not one of the project's
    runs (:func:`~opencsbs.core.listing.page_anchor`)."""
    with runtime.sessions() as session:
        scope = [VerifyRun.project_id == project_id]
        conds = list(scope)
        if marker is not None:
            anchor = page_anchor(session.scalars(select(VerifyRun).where(VerifyRun.id == marker, *scope)).first(),
                                 marker)
            conds.append(_before(VerifyRun, anchor))
        rows = session.scalars(select(VerifyRun).where(*conds)
                               .order_by(VerifyRun.created_at.desc(), VerifyRun.id.desc())
                               .limit(limit or DEFAULT_LIMIT))
        return [run_to_wire(r) for r in rows]


def get_verify_run(runtime: Runtime, project_id: str, run_id: str) -> dict[str, Any]:
    """One verify run; 404 CSBS.8201."""
    with runtime.sessions() as session:
        row = session.get(VerifyRun, run_id)
        if row is None or row.project_id != project_id:
            raise CSBSError(codes.VERIFY_RUN_NOT_FOUND, run_id)
        return run_to_wire(row)


def backup_verification(runtime: Runtime, project_id: str, item_id: str) -> dict[str, Any]:
    """Backup ``item_id``'s verification record (:func:`check_to_wire`); 404 CSBS.3001."""
    with runtime.sessions() as session:
        item = _item(session, project_id, item_id)
        return check_to_wire(item, session.get(BackupCheck, item_id))


def list_verifications(runtime: Runtime, project_id: str, result: str | None = None,
                       server_id: str | None = None) -> list[dict[str, Any]]:
    """The verification records of the project's backups that have one, oldest backup first; ``result``
    (ok|damaged|passed|failed) keeps those whose verify or last drill result is that, ``server_id`` one
    server's."""
    with runtime.sessions() as session:
        query = (select(CheckpointItem, BackupCheck)
                 .join(BackupCheck, BackupCheck.checkpoint_item_id == CheckpointItem.id)
                 .where(CheckpointItem.project_id == project_id, CheckpointItem.status != ItemStatus.DELETED)
                 .order_by(CheckpointItem.created_at, CheckpointItem.id))
        if server_id:
            query = query.where(CheckpointItem.resource_id == server_id)
        out = []
        for item, row in session.execute(query):
            if result and result not in (row.verify_result, row.drill_result):
                continue
            out.append(check_to_wire(item, row))
        return out


# --- drills -------------------------------------------------------------------------------------------------


def choose_backup(runtime: Runtime, session: Session, project_id: str, choice: str, item_id: str | None = None,
                  server_id: str | None = None, auth_token: str | None = None) -> CheckpointItem:
    """The backup a drill restores: ``id`` (``item_id``), ``latest`` (newest settled backup, of ``server_id`` when
    given) or ``random`` (any of them). 404 CSBS.3001, 400 CSBS.6000 (a ``server_id`` the project does not have,
    :func:`_check_server`), 409 CSBS.8204 (a server of the project without an available backup), 400
    CSBS.9001."""
    if choice not in DRILL_CHOICES:
        raise invalid(f"choice {choice!r} is not one of {', '.join(DRILL_CHOICES)}")
    if choice == "id":
        if not item_id:
            raise invalid("choice 'id' needs a checkpoint_item_id")
        item = _item(session, project_id, item_id)
        if not checkable(item):
            raise CSBSError(codes.NOTHING_TO_DRILL, f"backup {item_id} is {item.status}")
        return item
    if item_id:
        raise invalid(f"checkpoint_item_id goes with choice 'id', not {choice!r}")
    query = select(CheckpointItem).where(CheckpointItem.project_id == project_id,
                                         CheckpointItem.status == ItemStatus.AVAILABLE)
    if server_id:
        query = query.where(CheckpointItem.resource_id == server_id)
    items = list(session.scalars(query.order_by(CheckpointItem.created_at.desc(), CheckpointItem.id)))
    if not items:
        if server_id:
            _check_server(runtime, session, project_id, server_id, auth_token)
        raise CSBSError(codes.NOTHING_TO_DRILL,
                        f"server {server_id} has no available backup" if server_id else
                        "the project has no available backup")
    return items[0] if choice == "latest" else random.SystemRandom().choice(items)


def new_drill(runtime: Runtime, session: Session, created_by: str, project_id: str, choice: str,
              item_id: str | None = None, server_id: str | None = None, schedule_id: str | None = None,
              auth_token: str | None = None) -> Drill:
    """Choose the backup and add a pending drill and its job in the caller's transaction."""
    item = choose_backup(runtime, session, project_id, choice, item_id, server_id, auth_token)
    drill = Drill(project_id=project_id, checkpoint_item_id=item.id, resource_id=item.resource_id,
                  resource_name=item.resource_name or "", choice=choice, status="pending", bytes_restored=0,
                  volumes=[], message="", schedule_id=schedule_id, created_by=created_by, created_at=utcnow())
    session.add(drill)
    session.flush()
    drill.job_id = enqueue(session, "drill", project_id, drill.id).id
    return drill


def start_drill(runtime: Runtime, principal: Principal, project_id: str, choice: str = "latest",
                checkpoint_item_id: str | None = None, server_id: str | None = None) -> dict[str, Any]:
    """Queue a restore drill of one backup (:func:`choose_backup`). Returns the drill (``pending``)."""
    with transaction(runtime.sessions) as session:
        drill = new_drill(runtime, session, principal.user_id or "", project_id, choice, checkpoint_item_id,
                          server_id, auth_token=principal.cloud_token(project_id))
        out = drill_to_wire(drill)
    log.info("project %s: drill %s of backup %s queued by %s", project_id, out["id"], out["checkpoint_item_id"],
             principal.user_id)
    return out


def list_drills(runtime: Runtime, project_id: str, server_id: str | None = None,
                checkpoint_item_id: str | None = None, limit: int | None = None,
                marker: str | None = None) -> list[dict[str, Any]]:
    """The project's drills, newest first (``created_at``, then ``id``, both descending; filters: server,
    backup), after drill id ``marker``, at most ``limit`` (default 100). 400 CSBS.9001 for a marker that is not
    one of the drills the list's project and filters select (:func:`~opencsbs.core.listing.page_anchor`)."""
    with runtime.sessions() as session:
        scope = [Drill.project_id == project_id]
        if server_id:
            scope.append(Drill.resource_id == server_id)
        if checkpoint_item_id:
            scope.append(Drill.checkpoint_item_id == checkpoint_item_id)
        conds = list(scope)
        if marker is not None:
            anchor = page_anchor(session.scalars(select(Drill).where(Drill.id == marker, *scope)).first(), marker)
            conds.append(_before(Drill, anchor))
        rows = session.scalars(select(Drill).where(*conds).order_by(Drill.created_at.desc(), Drill.id.desc())
                               .limit(limit or DEFAULT_LIMIT))
        return [drill_to_wire(r) for r in rows]


def get_drill(runtime: Runtime, project_id: str, drill_id: str) -> dict[str, Any]:
    """One drill; 404 CSBS.8202."""
    with runtime.sessions() as session:
        row = session.get(Drill, drill_id)
        if row is None or row.project_id != project_id:
            raise CSBSError(codes.DRILL_NOT_FOUND, drill_id)
        return drill_to_wire(row)


# --- schedules ----------------------------------------------------------------------------------------------


def _schedule_parameters(runtime: Runtime, session: Session, project_id: str, kind: str,
                         parameters: dict[str, Any], auth_token: str | None = None) -> dict:
    if kind == "verify":
        allowed = {"policy_id", "outdated_after_days"}
    elif kind == "drill":
        allowed = {"choice", "server_id"}
    else:
        raise invalid(f"kind {kind!r} is not verify or drill")
    extra = set(parameters) - allowed
    if extra:
        raise invalid(f"{kind} schedule parameters {sorted(extra)} unknown (allowed: {sorted(allowed)})")
    types = {"policy_id": str, "outdated_after_days": int, "choice": str, "server_id": str}
    for name, value in parameters.items():
        if value is not None and (not isinstance(value, types[name]) or isinstance(value, bool)):
            raise invalid(f"{kind} schedule parameter {name} must be a {types[name].__name__}")
    if kind == "verify":
        _check_policy(session, project_id, parameters.get("policy_id"))
        _days(parameters.get("outdated_after_days"))
    else:
        choice = parameters.get("choice") or "latest"
        parameters["choice"] = choice
        if choice not in ("latest", "random"):
            raise invalid(f"a scheduled drill's choice is latest or random, not {choice!r}")
        if parameters.get("server_id"):
            _check_server(runtime, session, project_id, parameters["server_id"], auth_token)
    return parameters


def create_schedule(runtime: Runtime, principal: Principal, project_id: str, kind: str, pattern: str,
                    start_time: str | None = None, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schedule of verify runs or drills on an RRULE (as a policy's ``pattern``), from ``start_time`` (UTC,
    default now). 400 CSBS.9001 (bad pattern, kind or parameters), 404 CSBS.3000, 400 CSBS.6000 (a drill
    schedule's ``server_id`` the project does not have)."""
    try:
        start = parse_wire_ts(start_time) if start_time else utcnow()
    except ValueError:
        start = None
    if start is None:
        raise invalid(f"start_time {start_time!r} is not a time like 2026-12-05T07:00:00")
    schedule = parse_pattern(pattern, start, field="check_schedule.pattern")
    now = utcnow()
    with transaction(runtime.sessions) as session:
        params = _schedule_parameters(runtime, session, project_id, kind, dict(parameters or {}),
                                      principal.cloud_token(project_id))
        row = CheckSchedule(project_id=project_id, kind=kind, pattern=pattern, start_time=start,
                            next_run_at=schedule.next_after(now),
                            parameters=params, created_by=principal.user_id or "", created_at=now)
        session.add(row)
        session.flush()
        return schedule_to_wire(row)


def list_schedules(runtime: Runtime, project_id: str) -> list[dict[str, Any]]:
    """The project's verify and drill schedules, oldest first."""
    with runtime.sessions() as session:
        rows = session.scalars(select(CheckSchedule).where(CheckSchedule.project_id == project_id)
                               .order_by(CheckSchedule.created_at, CheckSchedule.id))
        return [schedule_to_wire(r) for r in rows]


def delete_schedule(runtime: Runtime, project_id: str, schedule_id: str) -> None:
    """Remove a schedule (runs it started stay listed); 404 CSBS.8205."""
    with transaction(runtime.sessions) as session:
        row = session.get(CheckSchedule, schedule_id)
        if row is None or row.project_id != project_id:
            raise CSBSError(codes.CHECK_SCHEDULE_NOT_FOUND, schedule_id)
        session.delete(row)


def start_due(runtime: Runtime, now: datetime | None = None) -> int:
    """Start the runs of every schedule whose ``next_run_at`` has passed (one run per schedule however many
    slots were missed) and move it to its next slot. Returns how many runs were started; a schedule whose run
    cannot start (e.g. no backup to drill) is logged and moved on."""
    now = now or utcnow()
    started = 0
    with runtime.sessions() as session:
        due = [r.id for r in session.scalars(select(CheckSchedule).where(CheckSchedule.next_run_at <= now))]
    for schedule_id in due:
        try:
            with transaction(runtime.sessions) as session:
                row = session.get(CheckSchedule, schedule_id)
                if row is None or row.next_run_at is None or row.next_run_at > now:
                    continue
                row.next_run_at = parse_pattern(row.pattern, row.start_time).next_after(now)
                p = row.parameters or {}
                if row.kind == "verify":
                    new_verify_run(session, "opencsbs-scheduler", row.project_id, policy_id=p.get("policy_id"),
                                   outdated_after_days=p.get("outdated_after_days"), schedule_id=row.id)
                else:
                    new_drill(runtime, session, "opencsbs-scheduler", row.project_id, p.get("choice", "latest"),
                              server_id=p.get("server_id"), schedule_id=row.id)
            started += 1
        except CSBSError as exc:
            log.warning("schedule %s: run not started: %s", schedule_id, exc.error_msg)
            with transaction(runtime.sessions) as session:
                row = session.get(CheckSchedule, schedule_id)
                if row is not None:
                    row.next_run_at = parse_pattern(row.pattern, row.start_time).next_after(now)
    return started


# --- the bank's own verify ----------------------------------------------------------------------------------


def backups_of_indexes(runtime: Runtime, index_names: Sequence[str]) -> list[dict[str, Any]]:
    """The backups (checkpoint_items) whose volume backups are the bank indexes ``index_names`` (chunk → index →
    volume backup → backup): ``[{"checkpoint_item_id", "project_id", "resource_id", "resource_name", "status",
    "indexes": [names]}]`` ordered by project and creation; an index no backup records (left by a deleted backup,
    GC's to remove) is listed with ``checkpoint_item_id`` None."""
    from opencsbs.db.models import VolumeBackup

    names = sorted(set(index_names))
    by_item: dict[str, dict[str, Any]] = {}
    known: set[str] = set()
    with runtime.sessions() as session:
        for start in range(0, len(names), 500):
            rows = session.execute(select(VolumeBackup.index_name, CheckpointItem)
                                   .join(CheckpointItem, CheckpointItem.id == VolumeBackup.checkpoint_item_id)
                                   .where(VolumeBackup.index_name.in_(names[start:start + 500])))
            for name, item in rows:
                known.add(name)
                entry = by_item.setdefault(item.id, {
                    "checkpoint_item_id": item.id, "project_id": item.project_id, "resource_id": item.resource_id,
                    "resource_name": item.resource_name, "status": item.status, "indexes": [],
                    "_created": item.created_at})
                entry["indexes"].append(name)
    out = sorted(by_item.values(), key=lambda e: (e["project_id"], e.pop("_created"), e["checkpoint_item_id"]))
    out += [{"checkpoint_item_id": None, "project_id": None, "resource_id": None, "resource_name": None,
             "status": None, "indexes": [n]} for n in names if n not in known]
    return out
