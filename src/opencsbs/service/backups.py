"""Backups as use cases: create (``protect``, also used by policy runs), delete checkpoints (also used by
retention) and quotas. Listing, counting and showing checkpoint_items: :mod:`opencsbs.service.checkpoint_items`.

Sources: ``resource_management/creating_a_backup_for_a_resource.rst`` (protect and its ``checkpoint`` answer),
``backup_management/deleting_a_backup.rst``, ``quota_management/querying_quotas.rst`` and the wire-fixtures
``*-backup.*.json``.

A new backup is written in one transaction: the server lock (``resource_locks``, so check_protectable answers
CSBS.6005 while it runs), the checkpoint, its checkpoint_item and one volume backup per disk (all
``protecting``), and the pending backup job. The item is therefore listed the moment the call returns.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencsbs.auth.base import Principal
from opencsbs.clouds.base import CloudContext
from opencsbs.core import codes
from opencsbs.core import protectable as rules
from opencsbs.core import tags as tag_rules
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.facts import SERVER, ServerFacts
from opencsbs.core.lifecycle import ItemStatus
from opencsbs.core.quotas import QuotaUsage, check_new_backup
from opencsbs.core.timeutil import utcnow, wire_ts
from opencsbs.db.base import lock_project, new_id, transaction
from opencsbs.db.models import Checkpoint, CheckpointItem, Policy, ResourceLock, VolumeBackup
from opencsbs.db.tallies import tally
from opencsbs.engine.jobs import enqueue
from opencsbs.engine.placement import server_needs
from opencsbs.runtime import Runtime
from opencsbs.service import locks
from opencsbs.service.protectable import protection_states

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def default_name(auto_trigger: bool) -> str:
    """``manualbk_xxxx`` (or ``autobk_xxxx`` for a policy run), ``xxxx`` four random hex digits."""
    return f"{'autobk' if auto_trigger else 'manualbk'}_{secrets.token_hex(2)}"


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
        raise invalid("backup_name must be 1 to 255 letters, digits, '_' or '-'")
    if description is not None and (len(description) > 255 or "<" in description or ">" in description):
        raise invalid("description must be at most 255 characters without '<' or '>'")
    if tags is not None:
        tag_rules.check_backup_tags(tags)


def quota_usage(session: Session, runtime: Runtime, project_id: str) -> QuotaUsage:
    """The project's quotas and what its retained backups (every status but ``deleted``) use, from the project's
    tally rows (``db/tallies.py``: exact, a few rows whatever the number of backups)."""
    count, used = tally(session, project_id, exclude_status=ItemStatus.DELETED)
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
            job = enqueue(session, "backup", project_id, item_id, resource_id=resource_id,
                          needs=server_needs(runtime, server))
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
                            status=ItemStatus.PROTECTING, policy_id=policy_id, plan=plan, extra_info=extra_info)
            session.add(cp)
            item = CheckpointItem(
                id=item_id, checkpoint_id=checkpoint_id, project_id=project_id, name=name,
                description=description or "", status=ItemStatus.PROTECTING, resource_id=resource_id,
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
                    name=f"{name}_{volume.name or volume.id}"[:255], status=ItemStatus.PROTECTING,
                    source_volume_id=volume.id, source_volume_name=volume.name,
                    source_volume_size=volume.size_gb, device=volume.device, bootable=volume.bootable,
                ))
            session.flush()
            wire = checkpoint_to_wire(cp)
    except IntegrityError:
        raise CSBSError(codes.SERVER_BUSY, resource_id) from None
    return wire


# --- delete -------------------------------------------------------------------------------------------------


def delete_checkpoint(runtime: Runtime, project_id: str, checkpoint_id: str,
                      item_ids: Sequence[str] | None = None) -> str | None:
    """Delete a checkpoint's items (all, or ``item_ids``): they read ``deleting`` at once (a status the
    Terraform providers' destroy waits on; ``waiting_delete`` is not), a delete job drops their bank indexes and
    marks them ``deleted``. Returns the job id. A deleted checkpoint gives 404 CSBS.3001; items still being made,
    restored or deleted (a repeated DELETE while the first one waits or runs) give 400 CSBS.2003 "item in
    executing", which the clients' retry loops read as "still deleting"; an item kept by a legal hold or a
    retention lock gives 409 CSBS.8102 / CSBS.8101 and nothing is deleted (docs/locks.md).
    """
    with transaction(runtime.sessions) as session:
        cp = session.scalars(
            select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.project_id == project_id)
            .with_for_update()
        ).first()
        if cp is None or cp.status == ItemStatus.DELETED:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_id)
        items = list(cp.items)
        if item_ids is not None:
            wanted = list(dict.fromkeys(item_ids))
            by_id = {i.id: i for i in items}
            unknown = [i for i in wanted if i not in by_id]
            if unknown:
                raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, ",".join(unknown))
            items = [by_id[i] for i in wanted]
        live = [i for i in items if i.status != ItemStatus.DELETED]
        if not live:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_id)
        if any(i.status in ItemStatus.BUSY + ItemStatus.BEING_DELETED for i in live):
            raise CSBSError(codes.ITEM_IN_EXECUTING)
        refused = locks.deletion_refusal(session, project_id, live)  # legal holds, retention locks: 409
        if refused is not None:
            raise refused
        job = enqueue(session, "delete", project_id, checkpoint_id, state={"items": [i.id for i in live]})
        now = utcnow()
        for item in live:
            item.status = ItemStatus.DELETING
            item.updated_at = now
        if all(i.status in ItemStatus.BEING_DELETED + (ItemStatus.DELETED,) for i in cp.items):
            cp.status = ItemStatus.DELETING
        return job.id


def delete_backup(runtime: Runtime, project_id: str, checkpoint_item_id: str) -> str | None:
    """Delete one checkpoint_item (retention uses this). Same answers as :func:`delete_checkpoint`."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, checkpoint_item_id)
        if item is None or item.project_id != project_id:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, checkpoint_item_id)
        checkpoint_id = item.checkpoint_id
    return delete_checkpoint(runtime, project_id, checkpoint_id, [checkpoint_item_id])
