"""Running a policy (now, or at a scheduler slot) and applying its retention.

Sources: backup_management/executing_a_backup_policy.rst (``POST .../providers/{provider_id}/checkpoints``),
appendixes/error_codes.rst (CSBS.1001, 6030, 6032, 2004), the user guide (executing_a_backup_policy_at_once:
"If an ECS is being backed up, you cannot manually execute a backup policy on it"; "If a manual backup job is
still in progress, scheduled automatic backup operations will be postponed to the next backup cycle"; tags of
a policy apply to its backups; automatic backups are named ``autobk_xxxx``).

A run starts one backup (one checkpoint with one checkpoint_item) per server through
``service.backups.create_backup``, the same path as ``protect``; the checkpoint returned to the caller is the
first one, its ``protection_plan.resources`` listing every server the run started. Retention deletes through
``service.backups.delete_backup``, so the bank's garbage collection reclaims the space.

Refusals of a manual run: CSBS.3000 (no such policy), CSBS.1001 (a manual run of the policy is still making
backups), CSBS.6030 (an automatic run is), CSBS.2004 (a server of the run is being backed up or restored
elsewhere), CSBS.6032 (no server in the policy, or none that can be backed up now), CSBS.9001 (a requested
server is not in the policy). A scheduled run in the same situations is recorded as ``skipped``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from opencsbs.auth.base import Principal
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.lifecycle import ItemStatus
from opencsbs.core.retention import DELETE, BackupInfo, RetentionRule, decide
from opencsbs.core.tags import POLICY
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, Policy, PolicyRun, ResourceLock, ScheduledOperation
from opencsbs.runtime import Runtime
from opencsbs.service import backups, locks
from opencsbs.service.policies import find_policy
from opencsbs.service.tags import tags_of

log = logging.getLogger("opencsbs.policies")


def scheduler_principal(project_id: str) -> Principal:
    """Who a scheduled run acts as: the project itself, with no user token (drivers use service credentials)."""
    return Principal.operator(project_id, "opencsbs-scheduler", roles=("member",))


def _running_kind(runtime: Runtime, policy_id: str) -> bool | None:
    """Whether backups of the policy are being made: None (no), True (automatic ones), False (manual)."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(CheckpointItem.auto_trigger).where(CheckpointItem.policy_id == policy_id,
                                                      CheckpointItem.status.in_(ItemStatus.MAKING))
        ).all()
    if not rows:
        return None
    return any(auto for (auto,) in rows)


def _busy_refusal(runtime: Runtime, policy_id: str) -> CSBSError:
    """The refusal for a run whose servers are locked: CSBS.1001 / 6030 when the locks turn out to be this
    policy's own backups (a concurrent run of it started them after this run's first check), else CSBS.2004
    (another backup or restore holds them)."""
    running = _running_kind(runtime, policy_id)
    if running is not None:
        return CSBSError(codes.AUTO_PLAN_EXECUTING if running else codes.POLICY_EXECUTING)
    return CSBSError(codes.ITEM_IN_PLAN_EXECUTING)


def execute(
    runtime: Runtime,
    principal: Principal,
    project_id: str,
    policy_id: str,
    *,
    resources: Sequence[str] | None = None,
    auto_trigger: bool = False,
    operation_id: str | None = None,
    slot_at: datetime | None = None,
    run_id: str | None = None,
) -> dict:
    """Run policy ``policy_id`` now for all its servers or the ``resources`` subset; returns the ``checkpoint``
    wire dict of the first backup started. ``auto_trigger`` marks the backups automatic (``autobk_xxxx``,
    subject to retention). Raises the CSBSError codes listed in the module docstring."""
    with runtime.sessions() as session:
        policy = find_policy(session, project_id, policy_id)
        bound = [(r.resource_id, r.resource_type, r.name) for r in policy.resources]
        tags = tags_of(session, POLICY, [policy.id])[policy.id]
    if resources:  # None or [] = every server of the policy
        wanted = list(dict.fromkeys(resources))
        known = {rid for rid, _, _ in bound}
        unknown = [rid for rid in wanted if rid not in known]
        if unknown:
            raise invalid(f"resources {', '.join(unknown)} not in the policy")
        bound = [b for b in bound if b[0] in set(wanted)]
    if not bound:
        raise CSBSError(codes.PLAN_HAS_NO_RESOURCE)
    running = _running_kind(runtime, policy_id)
    if running is not None:
        raise CSBSError(codes.AUTO_PLAN_EXECUTING if running else codes.POLICY_EXECUTING)
    ids = [rid for rid, _, _ in bound]
    with runtime.sessions() as session:
        busy = set(session.scalars(select(ResourceLock.resource_id).where(ResourceLock.resource_id.in_(ids))))
    if busy and not auto_trigger:
        raise _busy_refusal(runtime, policy_id)
    wire_tags = [{"key": k, "value": v} for k, v in tags.items()] or None
    started: list[dict] = []
    refusals: list[CSBSError] = []
    for rid, rtype, _name in bound:
        if rid in busy:
            refusals.append(CSBSError(codes.ITEM_IN_PLAN_EXECUTING))
            continue
        try:
            started.append(backups.create_backup(
                runtime, principal, project_id, rid, tags=wire_tags, policy_id=policy_id,
                auto_trigger=auto_trigger, resource_type=rtype,
            ))
        except CSBSError as exc:
            if exc.status >= 500:  # the cloud cannot be reached: the caller sees it
                raise
            log.info("policy %s: server %s not backed up: %s", policy_id, rid, exc)
            refusals.append(exc)
    _record(runtime, policy_id, project_id, operation_id, slot_at, auto_trigger, started, refusals, run_id)
    if not started:
        if refusals and all(e.error_code in (codes.ITEM_IN_PLAN_EXECUTING.code, codes.SERVER_BUSY.code)
                            for e in refusals):
            raise _busy_refusal(runtime, policy_id)
        quota = next((e for e in refusals if e.error_code == codes.QUOTA_EXCEEDED.code), None)
        if quota is not None:
            raise quota
        raise CSBSError(codes.PLAN_HAS_NO_RESOURCE)
    answer = dict(started[0])
    plan_wire = dict(answer.get("protection_plan") or {})
    plan_wire["resources"] = [r for cp in started for r in (cp.get("protection_plan") or {}).get("resources", [])]
    answer["protection_plan"] = plan_wire
    return answer


def _record(runtime: Runtime, policy_id: str, project_id: str, operation_id: str | None, slot_at: datetime | None,
            auto_trigger: bool, started: list[dict], refusals: list[CSBSError], run_id: str | None) -> None:
    """Write (or finish) the policy_runs row of this run."""
    message = "; ".join(f"{e.error_code}: {e.error_msg}" for e in refusals)
    with transaction(runtime.sessions) as session:
        run = session.get(PolicyRun, run_id) if run_id else None
        if run is None:
            run = PolicyRun(policy_id=policy_id, project_id=project_id, operation_id=operation_id, slot_at=slot_at,
                            auto_trigger=auto_trigger)
            session.add(run)
        run.checkpoint_ids = [cp["id"] for cp in started]
        run.status = "done" if started else "error"
        run.message = message[:4000]
        run.finished_at = utcnow()


def run_slot(runtime: Runtime, run_id: str, now: datetime | None = None) -> None:
    """Execute the scheduler slot claimed as policy_runs row ``run_id`` (automatic backups), then apply the
    policy's retention. Never raises for a CSBS refusal: the run row records it (``skipped`` when a manual run
    of the policy was still making backups, as the user guide says). ``now`` (naive UTC, default the real
    time) is the retention's reference time."""
    with runtime.sessions() as session:
        run = session.get(PolicyRun, run_id)
        if run is None:
            return
        policy_id, project_id, operation_id, slot_at = run.policy_id, run.project_id, run.operation_id, run.slot_at
    slot = slot_at.isoformat() if slot_at else "-"
    if _running_kind(runtime, policy_id) is False:
        with transaction(runtime.sessions) as session:
            row = session.get(PolicyRun, run_id)
            row.status, row.message, row.finished_at = "skipped", "a manual run is still in progress", utcnow()
        log.info("policy %s slot %s skipped: a manual run of the policy is still in progress (run %s)", policy_id,
                 slot, run_id)
        return
    try:
        checkpoint = execute(runtime, scheduler_principal(project_id), project_id, policy_id, auto_trigger=True,
                             operation_id=operation_id, slot_at=slot_at, run_id=run_id)
    except CSBSError as exc:
        outcome = "skipped" if exc.code in (codes.AUTO_PLAN_EXECUTING, codes.POLICY_EXECUTING) else "error"
        with transaction(runtime.sessions) as session:
            row = session.get(PolicyRun, run_id)
            if row is not None and row.status == "running":
                row.status = outcome
                row.message, row.finished_at = f"{exc.error_code}: {exc.error_msg}", utcnow()
        log.info("policy %s slot %s %s: %s: %s (run %s)", policy_id, slot,
                 "skipped" if outcome == "skipped" else "started no backup", exc.error_code, exc.error_msg, run_id)
    else:
        servers = [r["id"] for r in (checkpoint.get("protection_plan") or {}).get("resources", [])]
        with runtime.sessions() as session:
            row = session.get(PolicyRun, run_id)
            refused = row.message if row is not None else ""
        log.info("policy %s slot %s fired: %d backup(s) started (servers %s)%s (run %s)", policy_id, slot,
                 len(servers), ", ".join(servers), f"; refused: {refused}" if refused else "", run_id)
    apply_retention(runtime, policy_id, now, run_id=run_id)


def _retention_facts(runtime: Runtime, policy_id: str):
    """``(project_id, rule, {server id: [BackupInfo]}, {item id: (name, created_at)})`` of ``policy_id``'s
    automatic backups (not deleted), or ``None`` for an unknown policy or one without a scheduled operation."""
    with runtime.sessions() as session:
        policy = session.get(Policy, policy_id)
        if policy is None:
            return None
        op = session.scalars(select(ScheduledOperation).where(ScheduledOperation.policy_id == policy_id)).first()
        if op is None:
            return None
        rule = RetentionRule.from_definition(op.operation_definition or {})
        project_id = policy.project_id
        rows = session.execute(
            select(CheckpointItem.id, CheckpointItem.resource_id, CheckpointItem.created_at, CheckpointItem.status,
                   CheckpointItem.name)
            .where(CheckpointItem.policy_id == policy_id, CheckpointItem.auto_trigger.is_(True),
                   CheckpointItem.project_id == project_id, CheckpointItem.status != ItemStatus.DELETED)
        ).all()
    per_server: dict[str, list[BackupInfo]] = defaultdict(list)
    names: dict[str, tuple[str, datetime]] = {}
    for item_id, resource_id, created_at, status, name in rows:
        per_server[resource_id].append(BackupInfo(item_id, created_at, status))
        names[item_id] = (name, created_at)
    return project_id, rule, per_server, names


def retention_preview(runtime: Runtime, project_id: str, policy_id: str, now: datetime | None = None,
                      include_kept: bool = False) -> dict[str, Any]:
    """What the retention of ``policy_id`` would do at ``now`` (naive UTC, default the real time), without doing
    it: ``{"policy_id", "now", "rule": {retention fields given}, "backups": [{"checkpoint_item_id", "name",
    "server_id", "created_at", "status", "action": "delete"|"keep"|"kept_by_lock", "reason", "error_code"}]}``,
    newest first per server. ``delete``: the next retention pass deletes it (``reason``: the rule);
    ``kept_by_lock``: the rule would delete it but a legal hold or retention lock keeps it (``reason``: the
    rule, then the lock's or hold's refusal, ``error_code`` CSBS.81xx); ``keep`` (only with ``include_kept``):
    why it stays. Manual backups are never touched and not listed. The same rules as :func:`apply_retention`
    (``core.retention.decide``, ``service.locks.kept_backups``). Raises CSBS.3000 (404) for a policy not in
    ``project_id``."""
    now = now or utcnow()
    with runtime.sessions() as session:
        find_policy(session, project_id, policy_id)
    facts = _retention_facts(runtime, policy_id)
    body: dict[str, Any] = {"policy_id": policy_id, "now": wire_ts(now), "rule": {}, "backups": []}
    if facts is None:
        return body
    _project, rule, per_server, names = facts
    body["rule"] = {k: v for k, v in vars(rule).items() if v is not None}
    verdicts = {server: decide(infos, rule, now) for server, infos in per_server.items()}
    doomed = sorted(i for v in verdicts.values() for i, (verdict, _why) in v.items() if verdict == DELETE)
    kept = locks.kept_backups(runtime, project_id, doomed, now)
    for server, infos in sorted(per_server.items()):
        for info in sorted(infos, key=lambda b: (b.created_at, b.id), reverse=True):
            verdict, why = verdicts[server][info.id]
            error = kept.get(info.id)
            if verdict == DELETE and error is not None:
                action, why, code = "kept_by_lock", f"{why}; kept: {error.error_msg}", error.error_code
            elif verdict == DELETE:
                action, code = "delete", None
            elif include_kept:
                action, code = "keep", None
            else:
                continue
            body["backups"].append({"checkpoint_item_id": info.id, "name": names[info.id][0], "server_id": server,
                                    "created_at": wire_ts(info.created_at), "status": info.status,
                                    "action": action, "reason": why, "error_code": code})
    return body


def apply_retention(runtime: Runtime, policy_id: str, now: datetime | None = None,
                    run_id: str | None = None) -> list[str]:
    """Delete the automatic backups of ``policy_id`` that its retention rule does not keep (per server, see
    ``core.retention``); returns the checkpoint_item ids whose delete was started. Manual backups and other
    policies' backups are never touched. A policy without a scheduled operation keeps everything. Backups a
    legal hold or a retention lock keeps are skipped: logged, and named in the ``message`` of policy run
    ``run_id`` (when given) as ``retention kept N backup(s) under lock or hold: <id> (CSBS.8101), ...``.
    Each deletion is logged at INFO with the rule that decided it (:func:`retention_preview` shows the same
    ahead of time)."""
    now = now or utcnow()
    facts = _retention_facts(runtime, policy_id)
    if facts is None:
        return []
    project_id, rule, per_server, _names = facts
    verdicts = {server: decide(infos, rule, now) for server, infos in per_server.items()}
    deleted: list[str] = []
    doomed_all = sorted(i for v in verdicts.values() for i, (verdict, _why) in v.items() if verdict == DELETE)
    kept = locks.kept_backups(runtime, project_id, doomed_all, now)
    for item_id, why in sorted(kept.items()):
        log.info("retention of policy %s: backup %s kept: %s", policy_id, item_id, why)
    if kept and run_id:
        note = (f"retention kept {len(kept)} backup(s) under lock or hold: "
                + ", ".join(f"{i} ({e.error_code})" for i, e in sorted(kept.items())))
        with transaction(runtime.sessions) as session:
            row = session.get(PolicyRun, run_id)
            if row is not None:
                row.message = ("; ".join(m for m in (row.message, note) if m))[:4000]
    for server, server_verdicts in verdicts.items():
        for item_id, (verdict, why) in sorted(server_verdicts.items()):
            if verdict != DELETE or item_id in kept:
                continue
            try:
                backups.delete_backup(runtime, project_id, item_id)
                deleted.append(item_id)
                log.info("retention of policy %s: deleting backup %s of server %s: %s", policy_id, item_id,
                         server, why)
            except CSBSError as exc:  # already going, or being restored: the next pass retries
                log.info("retention of policy %s: backup %s not deleted: %s", policy_id, item_id, exc)
    return deleted
