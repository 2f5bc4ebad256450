"""Restores as use cases: ``check_restorable`` (a batch of verdicts) and creating a restoration task.

Sources: ``resource_management/querying_the_restoration_capability_of_a_resource.rst`` and
``restoration_management/creating_a_restoration_task.rst``; the rules live in ``core/restorable.py``.

Cost of a check_restorable batch: one query for the checkpoint_items (with their volume backups), one driver
``get_servers`` call for all targets, one query for running jobs and policy bindings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from opencsbs.auth.base import Principal
from opencsbs.clouds.base import CloudContext
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.facts import SERVER, ProtectionState, ServerFacts
from opencsbs.core.lifecycle import ItemStatus, RestoreStatus
from opencsbs.core.restorable import BackupFacts, DiskBackupFacts, RestoreVerdict, check_restorable as rule
from opencsbs.core.timeutil import wire_ts
from opencsbs.db.base import dialect_of, in_ids, new_id, transaction
from opencsbs.db.models import Checkpoint, CheckpointItem, ResourceLock, Restore
from opencsbs.engine.jobs import enqueue
from opencsbs.engine.placement import server_needs
from opencsbs.runtime import Runtime
from opencsbs.service.checkpoint_items import ItemState
from opencsbs.service.protectable import protection_states

@dataclass(frozen=True)
class RestorePlan:
    """One restore (or check_restorable item): backup, target server and ``(backup_id, volume_id)`` mapping."""

    checkpoint_item_id: str
    target_id: str
    target_type: str
    mapping: tuple[tuple[str, str], ...]


def _backups(runtime: Runtime, project_id: str, item_ids: Sequence[str]) -> dict[str, BackupFacts]:
    ids = list(dict.fromkeys(item_ids))
    found: dict[str, BackupFacts] = {}
    with runtime.sessions() as session:
        if ids:
            query = (
                select(CheckpointItem)
                .where(in_ids(CheckpointItem.id, ids, dialect_of(session)), CheckpointItem.project_id == project_id)
                .options(selectinload(CheckpointItem.volume_backups))
            )
            for item in session.scalars(query):
                found[item.id] = BackupFacts(
                    id=item.id, status=item.status, resource_id=item.resource_id,
                    resource_type=item.resource_type, availability_zone=item.resource_az,
                    disks=tuple(DiskBackupFacts(vb.id, vb.source_volume_id, vb.source_volume_size, vb.bootable)
                                for vb in item.volume_backups),
                )
    return found


def check_restorable(runtime: Runtime, principal: Principal, project_id: str,
                     requests: Sequence[RestorePlan], seen: dict[str, ServerFacts] | None = None
                     ) -> list[RestoreVerdict]:
    """Verdicts for ``requests`` in order; ``seen`` (when given) receives the target servers' facts. Raises
    ``CloudUnavailable`` (503) when the cloud cannot be asked."""
    backups = _backups(runtime, project_id, [r.checkpoint_item_id for r in requests])
    ctx = CloudContext(project_id=project_id, auth_token=principal.cloud_token(project_id))
    targets = runtime.driver.get_servers(ctx, [r.target_id for r in requests])
    targets = {sid: s for sid, s in targets.items() if s.project_id == project_id}
    if seen is not None:
        seen.update(targets)
    states = protection_states(runtime, [r.target_id for r in requests])
    idle = ProtectionState()
    types = runtime.driver.protectable_types
    return [
        rule(r.checkpoint_item_id, backups.get(r.checkpoint_item_id), r.target_id, r.target_type,
             targets.get(r.target_id), states.get(r.target_id, idle), r.mapping, types)
        for r in requests
    ]


def restore_to_wire(restore: Restore) -> dict[str, Any]:
    """The ``restore`` (restore_resp) shape."""
    return {
        "id": restore.id,
        "checkpoint_id": restore.checkpoint_id,
        "parameters": restore.parameters,
        "project_id": restore.project_id,
        "provider_id": restore.provider_id,
        "resources_reason": restore.resources_reason or {},
        "resources_status": restore.resources_status or {},
        "restore_target": restore.restore_target,
        "status": restore.status,
        "progress": restore.progress,
        "created_at": wire_ts(restore.created_at),
        "finished_at": wire_ts(restore.finished_at),
    }


def create_restore(runtime: Runtime, principal: Principal, project_id: str, *, checkpoint_id: str,
                   request: RestorePlan, power_on: bool, restore_target: str | None = None) -> dict[str, Any]:
    """Start restoring ``request.checkpoint_item_id`` onto ``request.target_id``; returns the ``restore`` wire
    dict (status ``in_progress``). The item reads ``waiting_restore`` until the job starts.

    Raises CSBSError, in this order: 404 CSBS.3001 naming ``checkpoint_id`` when the project has no such
    checkpoint, 404 CSBS.3001 naming the item when the project has no such checkpoint_item or it is not in
    ``checkpoint_id``; then the first restore rule that fails (core/restorable.py); 503 when the cloud cannot be
    asked. The ids are checked first so a wrong id never hides behind a mapping error (CSBS.6017 and the like).
    """
    with runtime.sessions() as session:
        checkpoint = session.scalars(
            select(Checkpoint.id).where(Checkpoint.id == checkpoint_id, Checkpoint.project_id == project_id)
        ).first()
        if checkpoint is None:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_id)
        in_checkpoint = session.scalars(
            select(CheckpointItem.id).where(CheckpointItem.id == request.checkpoint_item_id,
                                            CheckpointItem.project_id == project_id,
                                            CheckpointItem.checkpoint_id == checkpoint_id)
        ).first()
        if in_checkpoint is None:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, request.checkpoint_item_id)
    targets: dict[str, ServerFacts] = {}
    verdict = check_restorable(runtime, principal, project_id, [request], seen=targets)[0]
    if not verdict.result:
        raise CSBSError(codes.lookup(verdict.error_code), message=verdict.error_msg)
    parameters = {
        "checkpoint_item_id": request.checkpoint_item_id,
        "power_on": power_on,
        "targets": {"server_id": request.target_id,
                    "volumes": [{"backup_id": b, "volume_id": v} for b, v in request.mapping]},
    }
    try:
        with transaction(runtime.sessions) as session:
            item = session.get(CheckpointItem, request.checkpoint_item_id)
            if item is None or item.checkpoint_id != checkpoint_id:
                raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, request.checkpoint_item_id)
            res = session.execute(
                update(CheckpointItem)
                .where(CheckpointItem.id == item.id, CheckpointItem.status == ItemStatus.AVAILABLE)
                .values(status=ItemStatus.WAITING_RESTORE)
            )
            if res.rowcount != 1:
                raise CSBSError(codes.CHECKPOINT_ITEM_NOT_AVAILABLE)
            restore_id = new_id()
            job = enqueue(session, "restore", project_id, restore_id, resource_id=request.target_id,
                          needs=server_needs(runtime, targets[request.target_id]))
            session.add(ResourceLock(resource_id=request.target_id, project_id=project_id, operation="restore",
                                     job_id=job.id))
            session.flush()
            restore = Restore(
                id=restore_id, project_id=project_id, provider_id=runtime.settings.provider_id,
                checkpoint_id=checkpoint_id, checkpoint_item_id=item.id, target_server_id=request.target_id,
                parameters=parameters, restore_target=restore_target, status=RestoreStatus.IN_PROGRESS,
                resources_status={request.target_id: RestoreStatus.IN_PROGRESS}, resources_reason={}, job_id=job.id,
            )
            session.add(restore)
            session.flush()
            wire = restore_to_wire(restore)
    except IntegrityError:
        raise CSBSError(codes.SERVER_RESTORING) from None
    return wire


def get_restore(runtime: Runtime, project_id: str, restore_id: str) -> dict[str, Any]:
    """One restoration task (404 CSBS.6040 "task not found" for an unknown id)."""
    with runtime.sessions() as session:
        restore = session.get(Restore, restore_id)
        if restore is None or restore.project_id != project_id:
            raise CSBSError(codes.TASK_NOT_FOUND)
        return restore_to_wire(restore)


def plan_onto_server(runtime: Runtime, item: ItemState, target_id: str) -> RestorePlan:
    """Restore backup ``item`` onto server ``target_id`` (of the backup's project): each disk backup onto the
    same disk when the target has it attached, otherwise onto the target's disks in device order (a disk backup
    beyond the target's disks keeps its source volume, which ``check_restorable`` then judges)."""
    target = runtime.driver.get_servers(CloudContext(project_id=item.project_id), [target_id]).get(target_id)
    attached = [v.id for v in target.volumes] if target else []
    mapping = []
    for position, (backup_id, source) in enumerate(item.disks):
        volume = source if source in attached else (attached[position] if position < len(attached) else source)
        mapping.append((backup_id, volume))
    return RestorePlan(item.id, target_id, SERVER, tuple(mapping))


def restore_progress(runtime: Runtime, restore_id: str) -> tuple[str, int, dict]:
    """``(status, progress in percent, resources_reason)`` of restore ``restore_id`` (any project)."""
    with runtime.sessions() as session:
        row = session.get(Restore, restore_id)
        return row.status, row.progress, row.resources_reason


def mapping_of(volumes: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    """``[{backup_id, volume_id}]`` (models or dicts) → ``((backup_id, volume_id), ...)``; CSBS.9001 if empty."""
    pairs = tuple((v["backup_id"], v["volume_id"]) if isinstance(v, dict) else (v.backup_id, v.volume_id)
                  for v in volumes)
    if not pairs:
        raise invalid("volumes must not be empty")
    return pairs


def _restore_record(restore: Restore) -> dict[str, Any]:
    """:func:`restore_to_wire` plus what the command line shows besides it (no CSBS route returns this shape):
    ``checkpoint_item_id``, ``target_server_id``, ``updated_at``."""
    return {**restore_to_wire(restore), "checkpoint_item_id": restore.checkpoint_item_id,
            "target_server_id": restore.target_server_id, "updated_at": wire_ts(restore.updated_at)}


def list_restores(runtime: Runtime, project_id: str | None = None, *, checkpoint_item_id: str | None = None,
                  target_server_id: str | None = None, status: str | None = None, limit: int = 100) -> list[dict]:
    """Restores, newest first, of ``project_id`` (every project when ``None``), optionally of one backup, onto
    one server or in one status (``RestoreStatus``: in_progress, success, error), at most ``limit`` (1 or more).
    Raises CSBS.9001 for a status outside ``RestoreStatus`` or a limit below 1."""
    if limit < 1:
        raise invalid("limit must be a positive integer")
    query = select(Restore)
    if status is not None:
        if status not in (RestoreStatus.IN_PROGRESS, RestoreStatus.SUCCESS, RestoreStatus.ERROR):
            raise invalid(f"status must be one of {RestoreStatus.IN_PROGRESS}, {RestoreStatus.SUCCESS}, "
                          f"{RestoreStatus.ERROR}")
        query = query.where(Restore.status == status)
    for column, value in ((Restore.project_id, project_id), (Restore.checkpoint_item_id, checkpoint_item_id),
                          (Restore.target_server_id, target_server_id)):
        if value is not None:
            query = query.where(column == value)
    with runtime.sessions() as session:
        rows = session.scalars(query.order_by(Restore.created_at.desc(), Restore.id.desc()).limit(limit))
        return [_restore_record(r) for r in rows]


def find_restore(runtime: Runtime, restore_id: str) -> dict | None:
    """The restore ``restore_id`` of any project, in :func:`list_restores`' shape; ``None`` when there is none."""
    with runtime.sessions() as session:
        restore = session.get(Restore, restore_id)
        return None if restore is None else _restore_record(restore)
