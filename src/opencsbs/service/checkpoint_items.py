"""Checkpoint_items (backups) as the API lists, counts and shows them, and as an operator's tool follows one.

Sources: ``backup_management/querying_all_backups.rst``, ``querying_a_single_backup.rst``,
``querying_the_number_of_backups.rst`` and the wire-fixtures ``*-backup.*.json``. Making and deleting backups:
:mod:`opencsbs.service.backups`.

Cost (docs/performance.md "The cost curve"): a list page is at most four statements whatever its size and however
deep the marker: the marker's row (primary key), the page (an index on the filter's column then ``created_at, id``,
walked from the marker as a keyset: ``(created_at, id) < (:created_at, :id)``, never an OFFSET scan unless the
client sends ``offset``), and the page's volume backups and copies, each one query over the page's ids
(:func:`attach_children`). A count reads the same index (``status`` is its last column). A show is one primary-key
or indexed query plus the same two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collections.abc import Sequence

from sqlalchemy import and_, func, literal, or_, select, tuple_
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from opencsbs.core import codes
from opencsbs.core.errors import CSBSError, invalid
from opencsbs.core.lifecycle import ItemStatus
from opencsbs.core.listing import page_anchor, parse_sort
from opencsbs.core.timeutil import parse_wire_ts, wire_ts
from opencsbs.db.base import dialect_of, in_ids
from opencsbs.db.tallies import tally
from opencsbs.db.models import BackupCopy, CheckpointItem, VolumeBackup
from opencsbs.core.figures import saving_ratio
from opencsbs.service.replication import copy_status, replication_records
from opencsbs.runtime import Runtime

MB = 1024 * 1024
SORT_KEYS = ("created_at", "updated_at", "name", "status", "protected_at", "id")
EPOCH = datetime(1970, 1, 1)
#: page size of a list without ``limit``
DEFAULT_LIMIT = 1000


def _mb(nbytes: int) -> int:
    return math.ceil(nbytes / MB) if nbytes > 0 else 0


# --- wire shapes --------------------------------------------------------------------------------------------


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
        "space_saving_ratio": saving_ratio(vb.size_bytes, vb.stored_bytes) if vb.status == ItemStatus.AVAILABLE else 0,
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
        "copy_status": copy_status(list(item.copies)),
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
        "supported_restore_mode": "backup" if item.status not in (ItemStatus.ERROR, ItemStatus.DELETED) else "na",
        "os_images_data": [],
        "support_lld": False,
        "taskid": item.job_id or "",
        "hypervisor_type": "QEMU",
    }
    out = {
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
    if item.copies:  # only a backup with copies shows it: without, a CSBS client sees the keys it always saw
        out["replication_records"] = replication_records(item, list(item.copies))
    return out


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
        raise invalid(f"{what} {value!r} is not a time like 2017-04-18T01:21:52.701973") \
            from None


def _filters(project_id: str, q: ItemQuery) -> list:
    conds = []
    if not q.all_tenants:
        conds.append(CheckpointItem.project_id == project_id)
    if q.status is not None:
        if q.status not in ItemStatus.ALL:
            raise invalid(f"status must be one of {', '.join(ItemStatus.ALL)}")
        conds.append(CheckpointItem.status == q.status)
    else:
        conds.append(CheckpointItem.status != ItemStatus.DELETED)
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
        raise invalid("limit must be a positive integer")
    if offset is not None and offset < 0:
        raise invalid("offset must not be negative")
    order = parse_sort(None if sort is None or not sort.strip() else sort, SORT_KEYS, [("created_at", True)])
    if "id" not in (k for k, _ in order):
        order.append(("id", order[-1][1]))
    conds = _filters(project_id, q)
    with runtime.sessions() as session:
        if marker is not None:
            scope = [CheckpointItem.id == marker]
            if not q.all_tenants:
                scope.append(CheckpointItem.project_id == project_id)
            anchor = page_anchor(session.scalars(select(CheckpointItem).where(*scope).options(*NO_CHILDREN)).first(),
                                 marker)
            conds.append(after(order, anchor))
        query = (
            select(CheckpointItem)
            .where(*conds)
            .options(*NO_CHILDREN)
            .order_by(*[_sort_column(k).desc() if descending else _sort_column(k).asc() for k, descending in order])
            .limit(limit or DEFAULT_LIMIT)
        )
        if offset:
            query = query.offset(offset)
        items = list(session.scalars(query))
        attach_children(session, items)
        return [item_to_wire(i) for i in items]


#: load options that keep a query from loading the item's children on its own (``attach_children`` does, once)
NO_CHILDREN = (lazyload(CheckpointItem.volume_backups), lazyload(CheckpointItem.copies))


def after(order: list[tuple[str, bool]], anchor: CheckpointItem):
    """The condition "sorts after ``anchor``" in ``order`` (``[(key, descending)]``, ending with a unique key).

    All keys one way (the default ``created_at:desc``, then ``id``): one row-value comparison,
    ``(created_at, id) < (:created_at, :id)``, which PostgreSQL and SQLite answer from an index whose columns
    follow the filter's in that order. Mixed directions: the equivalent OR of prefixes (correct, but scanned)."""
    cols = [_sort_column(k) for k, _ in order]
    vals = [literal(_sort_value(anchor, k), col.type) for (k, _), col in zip(order, cols)]
    if len({d for _, d in order}) == 1:
        return tuple_(*cols) < tuple_(*vals) if order[0][1] else tuple_(*cols) > tuple_(*vals)
    branches = []
    for i, (_key, descending) in enumerate(order):
        eq = [cols[j] == vals[j] for j in range(i)]
        branches.append(and_(*eq, cols[i] < vals[i] if descending else cols[i] > vals[i]))
    return or_(*branches)


def attach_children(session: Session, items: Sequence[CheckpointItem]) -> None:
    """Load the volume backups and copies of ``items`` with one query each (the ids as one JSON array parameter,
    ``db.base.in_ids``) and set them as the items' loaded collections: two statements for a page of any size."""
    if not items:
        return
    ids = [i.id for i in items]
    dialect = dialect_of(session)
    volumes: dict[str, list[VolumeBackup]] = {i: [] for i in ids}
    copies: dict[str, list[BackupCopy]] = {i: [] for i in ids}
    for vb in session.scalars(select(VolumeBackup).where(in_ids(VolumeBackup.checkpoint_item_id, ids, dialect))
                              .order_by(VolumeBackup.checkpoint_item_id, VolumeBackup.position)):
        volumes[vb.checkpoint_item_id].append(vb)
    for copy in session.scalars(select(BackupCopy).where(in_ids(BackupCopy.checkpoint_item_id, ids, dialect))
                                .order_by(BackupCopy.created_at)):
        copies[copy.checkpoint_item_id].append(copy)
    for item in items:
        set_committed_value(item, "volume_backups", volumes[item.id])
        set_committed_value(item, "copies", copies[item.id])


#: the ItemQuery fields a count can take from the tallies (db/tallies.py); any other filter counts the items
TALLIED = frozenset({"status", "all_tenants"})


def count_items(runtime: Runtime, project_id: str, q: ItemQuery) -> int:
    """Number of checkpoint_items matching ``q``: the same filters as :func:`list_items` (``ip`` matches the
    server's private IP or EIP in both). Filtered by status alone (or not at all), the count is summed from the
    project's tally rows (``db/tallies.py``: a few rows whatever the number of backups); any other filter counts
    the matching items through the list's indexes."""
    conds = _filters(project_id, q)
    with runtime.sessions() as session:
        if all(not value for key, value in vars(q).items() if key not in TALLIED):
            n, _ = tally(session, None if q.all_tenants else project_id, status=q.status,
                         exclude_status=ItemStatus.DELETED if q.status is None else None)
            return n
        return int(session.scalar(select(func.count(CheckpointItem.id)).where(*conds)))


def get_item(runtime: Runtime, project_id: str, item_id: str, all_tenants: bool = False) -> dict:
    """One checkpoint_item by its id, or by the id of a checkpoint holding exactly one item (single-server
    backups: real clients ask with the checkpoint id). A deleted item is gone: 404 CSBS.3001, as for an unknown
    id (clients wait for that 404 after a delete; ``status=deleted`` lists still show it)."""
    with runtime.sessions() as session:
        scope = [CheckpointItem.status != ItemStatus.DELETED]
        if not all_tenants:
            scope.append(CheckpointItem.project_id == project_id)
        item = session.scalars(
            select(CheckpointItem).where(CheckpointItem.id == item_id, *scope).options(*NO_CHILDREN)
        ).first()
        if item is None:
            items = session.scalars(
                select(CheckpointItem).where(CheckpointItem.checkpoint_id == item_id, *scope).options(*NO_CHILDREN)
                .limit(2)
            ).all()
            if len(items) == 1:
                item = items[0]
        if item is None:
            raise CSBSError(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
        attach_children(session, [item])
        return item_to_wire(item)


# --- following one backup (the CLI) -------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemState:
    """What an operator sees of one backup. ``progress`` in percent (0-100); ``source_bytes``/``stored_bytes``
    in bytes; ``disks``: ``(volume backup id, source volume id)`` in the backup's disk order."""

    id: str
    name: str
    checkpoint_id: str
    project_id: str
    resource_id: str
    status: str
    progress: int
    fail_reason: str
    source_bytes: int
    stored_bytes: int
    disks: tuple[tuple[str, str], ...]


def _state(item: CheckpointItem) -> ItemState:
    return ItemState(id=item.id, name=item.name, checkpoint_id=item.checkpoint_id, project_id=item.project_id,
                     resource_id=item.resource_id, status=item.status, progress=item.progress,
                     fail_reason=item.fail_reason, source_bytes=item.source_bytes, stored_bytes=item.stored_bytes,
                     disks=tuple((vb.id, vb.source_volume_id) for vb in item.volume_backups))


def find_item(runtime: Runtime, item_id: str) -> ItemState | None:
    """The backup ``item_id`` of any project, or ``None`` when there is none."""
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        return None if item is None else _state(item)


def item_of_checkpoint(runtime: Runtime, checkpoint_id: str) -> ItemState:
    """The one backup of ``checkpoint_id`` (a checkpoint made by ``create_backup`` holds exactly one).
    Raises ``sqlalchemy.exc.NoResultFound`` when the checkpoint has none."""
    with runtime.sessions() as session:
        return _state(session.query(CheckpointItem).filter_by(checkpoint_id=checkpoint_id).one())
