"""Backups as use cases: create (``protect``, also used by policy runs), list/count/show checkpoint_items, delete
checkpoints (also used by retention) and quotas.

Sources: ``resource_management/creating_a_backup_for_a_resource.rst`` (protect and its ``checkpoint`` answer),
``backup_management/querying_all_backups.rst``, ``querying_a_single_backup.rst``,
``querying_the_number_of_backups.rst``, ``deleting_a_backup.rst``, ``quota_management/querying_quotas.rst`` and
the wire-fixtures ``*-backup.*.json``.

A new backup is written in one transaction: the server lock (``resource_locks``, so check_protectable answers
CSBS.6005 while it runs), the checkpoint, its checkpoint_item and one volume backup per disk (all
``protecting``), and the pending backup job. The item is therefore listed the moment the call returns.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from opencsbs.auth.base import Principal
from opencsbs.clouds.base import CloudContext
from opencsbs.core import codes
from opencsbs.core import protectable as rules
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.facts import SERVER, ServerFacts
from opencsbs.core.quotas import QuotaUsage, check_new_backup
from opencsbs.core.timeutil import parse_wire_ts, utcnow, wire_ts
from opencsbs.db.base import lock_project, new_id, transaction
from opencsbs.db.models import Checkpoint, CheckpointItem, Policy, ResourceLock, VolumeBackup
from opencsbs.engine.jobs import enqueue
from opencsbs.core.figures import saving_ratio
from opencsbs.runtime import Runtime
from opencsbs.service.protection import protection_states

MB = 1024 * 1024
STATUSES = ("waiting_protect", "protecting", "available", "waiting_restore", "restoring", "error",
            "waiting_delete", "deleting", "deleted")
BUSY_STATUSES = ("waiting_protect", "protecting", "waiting_restore", "restoring")
#: a delete accepted (queued or running); new deletes read ``deleting`` at once, ``waiting_delete`` is older rows
DELETING_STATUSES = ("waiting_delete", "deleting")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
SORT_KEYS = ("created_at", "updated_at", "name", "status", "protected_at", "id")
EPOCH = datetime(1970, 1, 1)
#: page size of a list without ``limit``
DEFAULT_LIMIT = 1000


def default_name(auto_trigger: bool) -> str:
    """``manualbk_xxxx`` (or ``autobk_xxxx`` for a policy run), ``xxxx`` four random hex digits."""
    return f"{'autobk' if auto_trigger else 'manualbk'}_{secrets.token_hex(2)}"


def _mb(nbytes: int) -> int:
    return math.ceil(nbytes / MB) if nbytes > 0 else 0


# --- wire shapes --------------------------------------------------------------------------------------------


def checkpoint_to_wire(cp: Checkpoint) -> dict[str, Any]:
    """The ``checkpoint`` (protect_resp) shape."""
    return {
        "id": cp.id,
        "project_id": cp.project_id,
        "status": cp.status,
        "created_at": wire_ts(cp.created_at),
        "resource_graph": None,
        "protection_plan": cp.plan,
        "extra_info": cp.extra_info,
    }


def volume_backup_to_wire(vb: VolumeBackup) -> dict[str, Any]:
    """One ``volume_backup`` of ``extend_info``: sizes in MB (stored), source size in GB, speed in KB/s."""
    return {
        "id": vb.id,
        "name": vb.name,
        "status": vb.status,
        "bootable": vb.bootable,
        "average_speed": vb.average_speed,
        "image_type": "backup",
        "incremental": vb.incremental,
        "size": _mb(vb.stored_bytes),
        "source_volume_id": vb.source_volume_id,
        "source_volume_size": vb.source_volume_size,
        "source_volume_name": vb.source_volume_name,
        "space_saving_ratio": saving_ratio(vb.size_bytes, vb.stored_bytes) if vb.status == "available" else 0,
        "snapshot_id": vb.snapshot_id or "",
    }


def item_to_wire(item: CheckpointItem) -> dict[str, Any]:
    """The ``checkpoint_item`` shape (querying_all_backups.rst Table 4/5, wire-fixtures getResponse)."""
    fail_code: dict[str, Any] = {}
    if item.fail_code:
        digits = item.fail_code.rsplit(".", 1)[-1]
        fail_code = {"Code": int(digits) if digits.isdigit() else 0, "Description": item.fail_reason}
    extend = {
        "auto_trigger": item.auto_trigger,
        "average_speed": item.average_speed,
        "copy_from": "",
        "copy_status": "na",
        "fail_code": fail_code,
        "fail_op": item.fail_op or "",
        "fail_reason": item.fail_reason or "",
        "image_type": item.image_type,
        "incremental": item.incremental,
        "progress": item.progress,
        "resource_az": item.resource_az or "",
        "resource_name": item.resource_name,
        "resource_type": item.resource_type,
        "size": _mb(item.stored_bytes),
        "space_saving_ratio": saving_ratio(item.source_bytes, item.stored_bytes)
        if item.protected_at is not None else 0,
        "volume_backups": [volume_backup_to_wire(vb) for vb in item.volume_backups],
        "finished_at": wire_ts(item.finished_at) or "",
        "supported_restore_mode": "backup" if item.status not in ("error", "deleted") else "na",
        "os_images_data": [],
        "support_lld": False,
        "taskid": item.job_id or "",
        "hypervisor_type": "QEMU",
    }
    return {
        "id": item.id,
        "name": item.name,
        "checkpoint_id": item.checkpoint_id,
        "resource_id": item.resource_id,
        "resource_type": item.resource_type,
        "status": item.status,
        "created_at": wire_ts(item.created_at),
        "updated_at": wire_ts(item.updated_at),
        "description": item.description,
        "tags": list(item.tags or []),
        "backup_data": dict(item.backup_data or {}),
        "extend_info": extend,
    }


def _backup_data(runtime: Runtime, server: ServerFacts) -> dict[str, Any]:
    flavor = server.flavor or {}
    return {
        "__openstack_region_name": runtime.settings.region,
        "cloudservicetype": "QEMU",
        "disk": int(flavor.get("disk", 0) or 0),
        "eip": str(flavor.get("eip", "") or ""),
        "imagetype": str(flavor.get("imagetype", "") or ""),
        "private_ip": str(flavor.get("private_ip", "") or ""),
        "ram": int(flavor.get("ram", 0) or 0),
        "vcpus": int(flavor.get("vcpus", 0) or 0),
    }


# --- create -------------------------------------------------------------------------------------------------


def validate_backup_params(name: str | None, description: str | None, tags: Sequence[dict] | None) -> None:
    """Raise CSBS.9001 for a name, description or tag list the reference does not allow (protect_param)."""
    if name is not None and not NAME_RE.match(name):
        raise invalid("Invalid request parameters: backup_name must be 1 to 255 letters, digits, '_' or '-'")
    if description is not None and (len(description) > 255 or "<" in description or ">" in description):
        raise invalid("Invalid request parameters: description must be at most 255 characters without '<' or '>'")
    if tags is not None:
        if not tags:
            raise invalid("Invalid request parameters: tags must not be an empty list")
        if len(tags) > 10:
            raise CSBSError(codes.TAGS_OVER_LIMIT, 10)
        keys = [str(t.get("key", "")).strip() for t in tags]
        if len(set(keys)) != len(keys):
            raise invalid("Invalid request parameters: tag keys must be unique")
        for t in tags:
            key = str(t.get("key", "")).strip()
            value = str(t.get("value", "")).strip()
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,36}", key):
                raise invalid(f"Invalid request parameters: tag key {key!r} must be 1 to 36 letters, digits, '_' or '-'")
            if not re.fullmatch(r"[A-Za-z0-9_-]{0,43}", value):
                raise invalid(f"Invalid request parameters: tag value {value!r} must be at most 43 letters, digits, "
                              "'_' or '-'")


def quota_usage(session: Session, runtime: Runtime, project_id: str) -> QuotaUsage:
    """The project's quotas and what its retained backups use."""
    count, used = session.execute(
        select(func.count(CheckpointItem.id), func.coalesce(func.sum(CheckpointItem.stored_bytes), 0))
        .where(CheckpointItem.project_id == project_id, CheckpointItem.status != "deleted")
    ).one()
    backups, capacity = runtime.settings.quotas.for_project(project_id)
    return QuotaUsage(backups, capacity, int(count), int(used))


def get_quotas(runtime: Runtime, project_id: str) -> dict[str, Any]:
    """``GET /v1/{project_id}/quotas`` body."""
    with runtime.sessions() as session:
        return quota_usage(session, runtime, project_id).to_wire()


def create_backup(
    runtime: Runtime,
    principal: Principal,
    project_id: str,
    resource_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    incremental: bool | None = None,
    tags: Sequence[dict] | None = None,
    extra_info: dict | None = None,
    policy_id: str | None = None,
    auto_trigger: bool = False,
    resource_type: str = SERVER,
) -> dict[str, Any]:
    """Start a backup of server ``resource_id``; returns the ``checkpoint`` wire dict (status ``protecting``).

    ``name`` defaults to ``manualbk_xxxx`` (``autobk_xxxx`` when ``auto_trigger``); ``incremental`` (default
    True) reuses the newest backup of each disk as the base (the first backup is always full); ``policy_id``
    names the policy that ran it. Raises CSBSError: the check_protectable code (CSBS.6000, 6001, 6003, 6005,
    6006, 6007, 6010, 6027, 6033), CSBS.9006 (quota), CSBS.9001 (bad parameters), 503 (cloud unreachable).
    """
    validate_backup_params(name, description, tags)
    ctx = CloudContext(project_id=project_id, auth_token=principal.cloud_token(project_id))
    servers = runtime.driver.get_servers(ctx, [resource_id])
    server = servers.get(resource_id)
    if server is not None and server.project_id != project_id:
        server = None
    state = protection_states(runtime, [resource_id]).get(resource_id, rules.ProtectionState())
    verdict = rules.check_protectable(resource_id, resource_type, server, state, runtime.protectable_config)
    if not verdict.result:
        raise CSBSError(codes.lookup(verdict.error_code), message=verdict.error_msg)
    assert server is not None
    name = name or default_name(auto_trigger)
    policy_name = None
    try:
        with transaction(runtime.sessions) as session:
            lock_project(session, project_id, "backup_quota")  # check and insert as one step per project
            check_new_backup(quota_usage(session, runtime, project_id))
            if policy_id:
                policy = session.get(Policy, policy_id)
                policy_name = policy.name if policy is not None else None
            checkpoint_id, item_id = new_id(), new_id()
            job = enqueue(session, "backup", project_id, item_id, resource_id=resource_id)
            session.add(ResourceLock(resource_id=resource_id, project_id=project_id, operation="backup",
                                     job_id=job.id))
            session.flush()
            plan = {
                "id": policy_id or f"fake_{new_id()}",
                "name": policy_name or f"server protect plan for {resource_id}",
                "resources": [{"type": resource_type, "id": resource_id, "name": server.name,
                               "extra_info": json.dumps(extra_info or {})}],
            }
            cp = Checkpoint(id=checkpoint_id, project_id=project_id, provider_id=runtime.settings.provider_id,
                            status="protecting", policy_id=policy_id, plan=plan, extra_info=extra_info)
            session.add(cp)
            item = CheckpointItem(
                id=item_id, checkpoint_id=checkpoint_id, project_id=project_id, name=name,
                description=description or "", status="protecting", resource_id=resource_id,
                resource_type=resource_type, resource_name=server.name, resource_az=server.availability_zone,
                policy_id=policy_id, auto_trigger=auto_trigger,
                incremental=True if incremental is None else bool(incremental),
                tags=[{"key": str(t["key"]).strip(), "value": str(t.get("value", "")).strip()} for t in tags or []],
                extra_info=extra_info, backup_data=_backup_data(runtime, server), job_id=job.id,
            )
            session.add(item)
            for position, volume in enumerate(server.volumes):
                session.add(VolumeBackup(
                    id=new_id(), checkpoint_item_id=item_id, position=position,
                    name=f"{name}_{volume.name or volume.id}"[:255], status="protecting",
                    source_volume_id=volume.id, source_volume_name=volume.name,
                    source_volume_size=volume.size_gb, device=volume.device, bootable=volume.bootable,
                ))
            session.flush()
            wire = checkpoint_to_wire(cp)
    except IntegrityError:
        raise CSBSError(codes.SERVER_BUSY, resource_id) from None
    return wire


# --- query --------------------------------------------------------------------------------------------------


@dataclass
class ItemQuery:
    """Filters of ``GET /checkpoint_items`` and ``/checkpoint_items/count`` (all optional)."""

    status: str | None = None
    name: str | None = None
    az: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    resource_type: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    image_type: str | None = None
    policy_id: str | None = None
    checkpoint_id: str | None = None
    ip: str | None = None
    all_tenants: bool = False


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _ts(value: str, what: str) -> datetime:
    try:
        return parse_wire_ts(value)
    except ValueError:
        raise invalid(f"Invalid request parameters: {what} {value!r} is not a time like 2017-04-18T01:21:52.701973") \
            from None


def _filters(project_id: str, q: ItemQuery) -> list:
    conds = []
    if not q.all_tenants:
        conds.append(CheckpointItem.project_id == project_id)
    if q.status is not None:
        if q.status not in STATUSES:
            raise invalid(f"Invalid request parameters: status must be one of {', '.join(STATUSES)}")
        conds.append(CheckpointItem.status == q.status)
    else:
        conds.append(CheckpointItem.status != "deleted")
    if q.name:
        conds.append(CheckpointItem.name.like(_like(q.name), escape="\\"))
    if q.resource_name:
        conds.append(CheckpointItem.resource_name.like(_like(q.resource_name), escape="\\"))
    if q.az:
        conds.append(CheckpointItem.resource_az == q.az)
    if q.resource_id:
        conds.append(CheckpointItem.resource_id == q.resource_id)
    if q.resource_type:
        conds.append(CheckpointItem.resource_type == q.resource_type)
    if q.image_type:
        conds.append(CheckpointItem.image_type == q.image_type)
    if q.policy_id:
        conds.append(CheckpointItem.policy_id == q.policy_id)
    if q.checkpoint_id:
        conds.append(CheckpointItem.checkpoint_id == q.checkpoint_id)
    if q.ip:
        conds.append(or_(CheckpointItem.backup_data["private_ip"].as_string() == q.ip,
                         CheckpointItem.backup_data["eip"].as_string() == q.ip))
    if q.start_time:
        conds.append(CheckpointItem.created_at >= _ts(q.start_time, "start_time"))
    if q.end_time:
        conds.append(CheckpointItem.created_at <= _ts(q.end_time, "end_time"))
    return conds


def parse_sort(text: str | None) -> list[tuple[str, str]]:
    """``key1[:dir],key2[:dir]`` → ``[(key, "asc"|"desc")]`` (default direction desc). Raises CSBS.9001."""
    if text is None or not text.strip():
        return [("created_at", "desc")]
    if len(text) > 255:
        raise invalid("Invalid request parameters: sort is longer than 255 characters")
    keys: list[tuple[str, str]] = []
    for part in text.split(","):
        key, _, direction = part.strip().partition(":")
        key, direction = key.strip(), (direction.strip().lower() or "desc")
        if key not in SORT_KEYS:
            raise invalid(f"Invalid request parameters: sort key {key!r} is not one of {', '.join(SORT_KEYS)}")
        if direction not in ("asc", "desc"):
            raise invalid(f"Invalid request parameters: sort direction {direction!r} is not asc or desc")
        if key in (k for k, _ in keys):
            raise invalid(f"Invalid request parameters: sort key {key!r} given twice")
        keys.append((key, direction))
    return keys


def _sort_column(key: str):
    if key == "protected_at":
        return func.coalesce(CheckpointItem.protected_at, EPOCH)
    return getattr(CheckpointItem, key)


def _sort_value(item: CheckpointItem, key: str):
    if key == "protected_at":
        return item.protected_at or EPOCH
    return getattr(item, key)


def list_items(runtime: Runtime, project_id: str, q: ItemQuery, *, sort: str | None = None,
               limit: int | None = None, marker: str | None = None, offset: int | None = None) -> list[dict]:
    """Checkpoint_items matching ``q`` (deleted ones only when asked by status), sorted, after ``marker``,
    skipping ``offset``, at most ``limit`` (default 1000). Raises CSBS.9001 for bad parameters or an unknown
    marker."""
    if limit is not None and limit < 1:
        raise invalid("Invalid request parameters: limit must be a positive integer")
    if offset is not None and offset < 0:
        raise invalid("Invalid request parameters: offset must not be negative")
    order = parse_sort(sort)
    if "id" not in (k for k, _ in order):
        order.append(("id", order[-1][1]))
    conds = _filters(project_id, q)
    with runtime.sessions() as session:
        if marker is not None:
            scope = [CheckpointItem.id == marker]
            if not q.all_tenants:
                scope.append(CheckpointItem.project_id == project_id)
            anchor = session.scalars(select(CheckpointItem).where(*scope)).first()
            if anchor is None:
                raise invalid(f"Invalid request parameters: marker {marker} not found")
            branches = []
            for i, (key, direction) in enumerate(order):
                col, val = _sort_column(key), _sort_value(anchor, key)
                eq = [_sort_column(k) == _sort_value(anchor, k) for k, _ in order[:i]]
                branches.append(and_(*eq, col > val if direction == "asc" else col < val))
            conds.append(or_(*branches))
        query = (
            select(CheckpointItem)
            .where(*conds)
            .options(selectinload(CheckpointItem.volume_backups))
            .order_by(*[_sort_column(k).asc() if d == "asc" else _sort_column(k).desc() for k, d in order])
            .limit(limit or DEFAULT_LIMIT)
        )
        if offset:
            query = query.offset(offset)
        return [item_to_wire(i) for i in session.scalars(query)]


def count_items(runtime: Runtime, project_id: str, q: ItemQuery) -> int:
    """Number of checkpoint_items matching ``q``: the same filters as :func:`list_items` (``ip`` matches the
    server's private IP or EIP in both)."""
    conds = _filters(project_id, q)
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count(CheckpointItem.id)).where(*conds)))


def get_item(runtime: Runtime, project_id: str, item_id: str, all_tenants: bool = False) -> dict:
    """One checkpoint_item by its id, or by the id of a checkpoint holding exactly one item (single-server
    backups: real clients ask with the checkpoint id). A deleted item is gone: 404 CSBS.3001, as for an unknown
    id (clients wait for that 404 after a delete; ``status=deleted`` lists still show it)."""
    with runtime.sessions() as session:
        scope = [CheckpointItem.status != "deleted"]
        if not all_tenants:
            scope.append(CheckpointItem.project_id == project_id)
        item = session.scalars(
            select(CheckpointItem).where(CheckpointItem.id == item_id, *scope)
            .options(selectinload(CheckpointItem.volume_backups))
        ).first()
        if item is None:
            items = session.scalars(
                select(CheckpointItem).where(CheckpointItem.checkpoint_id == item_id, *scope)
                .options(selectinload(CheckpointItem.volume_backups))
            ).all()
            if len(items) == 1:
                item = items[0]
        if item is None:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
        return item_to_wire(item)


# --- delete -------------------------------------------------------------------------------------------------


def delete_checkpoint(runtime: Runtime, project_id: str, checkpoint_id: str,
                      item_ids: Sequence[str] | None = None) -> str | None:
    """Delete a checkpoint's items (all, or ``item_ids``): they read ``deleting`` at once (a status the
    Terraform providers' destroy waits on; ``waiting_delete`` is not), a delete job drops their bank indexes and
    marks them ``deleted``. Returns the job id. A deleted checkpoint gives 404 CSBS.3001; items still being made,
    restored or deleted (a repeated DELETE while the first one waits or runs) give 400 CSBS.2003 "item in
    executing", which the clients' retry loops read as "still deleting".
    """
    with transaction(runtime.sessions) as session:
        cp = session.scalars(
            select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.project_id == project_id)
            .with_for_update()
        ).first()
        if cp is None or cp.status == "deleted":
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_id)
        items = list(cp.items)
        if item_ids is not None:
            wanted = list(dict.fromkeys(item_ids))
            by_id = {i.id: i for i in items}
            unknown = [i for i in wanted if i not in by_id]
            if unknown:
                raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, ",".join(unknown))
            items = [by_id[i] for i in wanted]
        live = [i for i in items if i.status != "deleted"]
        if not live:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_id)
        if any(i.status in BUSY_STATUSES + DELETING_STATUSES for i in live):
            raise CSBSError(codes.ITEM_IN_EXECUTING)
        job = enqueue(session, "delete", project_id, checkpoint_id, state={"items": [i.id for i in live]})
        now = utcnow()
        for item in live:
            item.status = "deleting"
            item.updated_at = now
        if all(i.status in DELETING_STATUSES + ("deleted",) for i in cp.items):
            cp.status = "deleting"
        return job.id


def delete_backup(runtime: Runtime, project_id: str, checkpoint_item_id: str) -> str | None:
    """Delete one checkpoint_item (retention uses this). Same answers as :func:`delete_checkpoint`."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, checkpoint_item_id)
        if item is None or item.project_id != project_id:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_item_id)
        checkpoint_id = item.checkpoint_id
    return delete_checkpoint(runtime, project_id, checkpoint_id, [checkpoint_item_id])
