"""The restore-capability rules: may this backup be restored onto this server with this disk mapping.

Source: ``csbs-api-reference/api_description/resource_management/querying_the_restoration_capability_of_a_resource.rst``
(request and ``check_resp``), ``restoration_management/creating_a_restoration_task.rst`` (the same mapping in a
restore) and ``appendixes/error_codes.rst`` (codes and messages). The user guide: a backup restores onto a
server of the same type in the same AZ, every disk backup onto one attached disk at least as large, never a data
disk onto the system disk; shared disks cannot be restored.

Checked in this order; the first that fails gives the verdict:

====  =========  ===========================================================================
step  code       rule
====  =========  ===========================================================================
1     CSBS.3001  no such checkpoint_item in the caller's project
2     CSBS.4000  the checkpoint_item is not ``available``
3     CSBS.6013  the requested target ``resource_type`` is not a server type this provider restores
4     CSBS.6016  the backed-up server's type cannot be restored by this provider
5     CSBS.6000  no such target server in the caller's project (or it is terminated)
6     CSBS.6019  the target server's type differs from the backed-up server's type
7     CSBS.6015  a restore of the target server is already running
8     CSBS.6005  a backup of the target server is running
9     CSBS.6006  the target's status is not ACTIVE/SHUTOFF, or a task runs on it
10    CSBS.6025  the target server is in another availability zone than the backup
11    CSBS.6020  no volume attached to the target server
12    CSBS.6021  a shareable volume is attached to the target server
13    CSBS.9001  the mapping names a backup or a volume twice
14    CSBS.6017  the mapping names disk backups that are not in the checkpoint_item
15    CSBS.6014  the mapping names volumes that are not attached to the target server
16    CSBS.6018  some disk backups of the checkpoint_item are not mapped (partial restore)
17    CSBS.6023  a data-disk backup is mapped to the target's system disk
18    CSBS.6024  a target volume is smaller than the disk it restores
====  =========  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opencsbs.core import codes
from opencsbs.core.facts import SERVER_TYPES, ProtectionState, ServerFacts
from opencsbs.core.protectable import PROTECTABLE_STATUSES, TERMINATED_STATUSES


@dataclass(frozen=True)
class DiskBackupFacts:
    """One disk backup of a checkpoint_item: ``size_gb`` of the source disk, whether it was the system disk."""

    id: str
    source_volume_id: str
    size_gb: int
    bootable: bool = False


@dataclass(frozen=True)
class BackupFacts:
    """A checkpoint_item as the restore rules see it."""

    id: str
    status: str
    resource_id: str
    resource_type: str
    availability_zone: str | None = None
    disks: tuple[DiskBackupFacts, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RestoreVerdict:
    """One ``check_resp`` of check_restorable (target's id and type)."""

    resource_id: str
    resource_type: str
    result: bool
    error_code: str = ""
    error_msg: str = ""

    def to_wire(self) -> dict:
        """The wire shape (the reference's example carries empty ``error_code``/``error_msg`` on success)."""
        return {
            "resource_id": self.resource_id,
            "resource_type": self.resource_type,
            "result": self.result,
            "error_code": self.error_code,
            "error_msg": self.error_msg,
        }


def check_restorable(
    item_id: str,
    backup: BackupFacts | None,
    target_id: str,
    target_type: str,
    target: ServerFacts | None,
    target_state: ProtectionState,
    mapping: Sequence[tuple[str, str]],
    restorable_types: frozenset[str] = SERVER_TYPES,
) -> RestoreVerdict:
    """Decide whether ``backup`` (the checkpoint_item ``item_id`` of the caller's project, or None) may be
    restored onto ``target`` (the server ``target_id`` of the caller's project, or None) with ``mapping``
    (``(backup_id, volume_id)`` pairs). Returns a :class:`RestoreVerdict`; raises nothing.
    """

    def refuse(code: codes.Code, *args: object) -> RestoreVerdict:
        return RestoreVerdict(target_id, target_type, False, code.code, code.format(*args))

    if backup is None:
        return refuse(codes.CHECKPOINT_ITEM_NOT_FOUND, item_id)
    if backup.status != "available":
        return refuse(codes.CHECKPOINT_ITEM_NOT_AVAILABLE)
    if target_type not in restorable_types:
        return refuse(codes.TYPE_NOT_RESTORABLE, target_id, target_type)
    if backup.resource_type not in restorable_types:
        return refuse(codes.SERVER_TYPE_NOT_RESTORABLE)
    status = (target.status or "").upper() if target else ""
    if target is None or status in TERMINATED_STATUSES:
        return refuse(codes.SERVER_NOT_FOUND)
    if target.resource_type != backup.resource_type or target_type != backup.resource_type:
        return refuse(codes.SERVER_TYPE_MISMATCH, backup.resource_id, backup.resource_type, target_id,
                      target.resource_type)
    if target_state.busy_operation == "restore":
        return refuse(codes.SERVER_RESTORING)
    if target_state.busy_operation:
        return refuse(codes.SERVER_BUSY, target_id)
    if status not in PROTECTABLE_STATUSES or target.task_state:
        shown = f"{status}({target.task_state})" if target.task_state else status
        return refuse(codes.SERVER_STATUS_NOT_ALLOWED, target_id, shown)
    if (backup.availability_zone or None) != (target.availability_zone or None):
        return refuse(codes.RESTORE_AZ_MISMATCH, backup.id, target_id)
    if not target.volumes:
        return refuse(codes.NO_VOLUME_FOR_RESTORE, target_id)
    for volume in target.volumes:
        if volume.shareable:
            return refuse(codes.SHAREABLE_VOLUME_RESTORE, volume.id, target_id)
    backup_ids = [b for b, _ in mapping]
    volume_ids = [v for _, v in mapping]
    if len(set(backup_ids)) != len(backup_ids) or len(set(volume_ids)) != len(volume_ids):
        return refuse(codes.INVALID_PARAMETER, "a disk backup or a target volume appears twice in volumes")
    disks = {d.id: d for d in backup.disks}
    unknown = [b for b in backup_ids if b not in disks]
    if unknown:
        return refuse(codes.BACKUPS_NOT_IN_ITEM, ",".join(unknown), backup.id)
    attached = {v.id: v for v in target.volumes}
    missing = [v for v in volume_ids if v not in attached]
    if missing:
        return refuse(codes.VOLUMES_NOT_IN_TARGET, ",".join(missing))
    unmapped = [d.id for d in backup.disks if d.id not in set(backup_ids)]
    if unmapped:
        return refuse(codes.PARTIAL_RESTORE, ",".join(unmapped))
    for backup_id, volume_id in mapping:
        if attached[volume_id].bootable and not disks[backup_id].bootable:
            return refuse(codes.DATA_TO_SYSTEM_VOLUME, target_id)
    for backup_id, volume_id in mapping:
        if attached[volume_id].size_gb < disks[backup_id].size_gb:
            return refuse(codes.TARGET_VOLUME_TOO_SMALL, volume_id, attached[volume_id].size_gb, backup_id,
                          disks[backup_id].size_gb)
    return RestoreVerdict(target_id, target_type, True)
