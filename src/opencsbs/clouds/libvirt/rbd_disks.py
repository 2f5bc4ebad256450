"""RBD network disks of libvirt domains (``<disk type='network'><source protocol='rbd' name='pool/image'>``), read
and written with :mod:`opencsbs.clouds.rbd`, for KVM hosts on Ceph that run no OpenStack.

No libvirt import: the driver passes the domain handle's ``suspend``/``resume``/``isActive`` and plain values.

- Snapshot: every disk gets the RBD snapshot ``backup.<name>.snap.opencsbs`` (:func:`~opencsbs.clouds.rbd.
  rbd_snapshot_name`); a running domain with more than one disk is suspended (``virDomainSuspend``) while they are
  taken and resumed right after, so all disks share one instant. A retry finding every snapshot reuses them; a
  partial set is dropped and taken again.
- Change token = the RBD snapshot name; changed extents from ``diff_iterate`` (None when the base is gone).
- After a successful backup older opencsbs snapshots of the image are removed; a failed backup removes its own;
  :func:`prune` removes those no kept backup names (older than a grace period).
- Restore: the image is written through librbd while the domain is shut off.

Only ``pool/image`` names are handled (no RADOS namespaces); the Ceph client comes from ``cloud.libvirt_rbd``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from opencsbs.clouds.base import VolumeSnapshot
from opencsbs.clouds.libvirt.domain import DiskInfo
from opencsbs.clouds.rbd import Cluster, is_opencsbs_snapshot, rbd_snapshot_name
from opencsbs.core.blocks import Range

log = logging.getLogger(__name__)


def rbd_location(disk: DiskInfo) -> tuple[str, str] | None:
    """``(pool, image)`` of an RBD network disk; None for any other disk (or an RBD name with a namespace)."""
    if disk.source_type != "network" or disk.protocol != "rbd" or not disk.source:
        return None
    parts = disk.source.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def snapshot_disks(cluster: Cluster, disks: Sequence[tuple[str, DiskInfo, str, str]], name: str,
                   since: dict[str, str], running: bool, suspend: Callable[[], None], resume: Callable[[], None],
                   system_target: str | None) -> tuple[list[VolumeSnapshot], float | None]:
    """Snapshot every ``(volume_id, disk, pool, image)`` at one instant; ``(volume snapshots, seconds the domain
    was suspended or None)``."""
    snap = rbd_snapshot_name(name)
    present = [any(s.name == snap for s in cluster.list_snapshots(pool, image)) for _v, _d, pool, image in disks]
    paused = None
    if not all(present):
        for (_v, _d, pool, image), made in zip(disks, present, strict=True):
            if made:
                cluster.remove_snapshot(pool, image, snap)
        if running and len(disks) > 1:
            started = time.monotonic()
            suspend()
            try:
                for _v, _d, pool, image in disks:
                    cluster.create_snapshot(pool, image, snap)
            finally:
                resume()
                paused = time.monotonic() - started
            log.info("domain suspended %.3f s while %d RBD disks were snapshotted", paused, len(disks))
        else:
            for _v, _d, pool, image in disks:
                cluster.create_snapshot(pool, image, snap)
    out = []
    for vid, disk, pool, image in disks:
        by_name = {s.name: s for s in cluster.list_snapshots(pool, image)}
        info = by_name[snap]
        base = since.get(vid)
        usable = base if base in by_name and by_name[base].id < info.id else None
        out.append(VolumeSnapshot(
            volume_id=vid, snapshot_id=f"{pool}/{image}@{snap}", size=info.size, device=f"/dev/{disk.target}",
            bootable=disk.target == system_target, change_token=snap, since=usable,
            handle={"rbd": {"pool": pool, "image": image, "snap": snap, "snap_id": info.id}}))
    return out, paused


def changed_ranges(cluster: Cluster, vsnap: VolumeSnapshot) -> list[Range] | None:
    """Extents changed since ``vsnap.since`` (None: read everything)."""
    h = vsnap.handle["rbd"]
    if not vsnap.since:
        return None
    return cluster.changed_ranges(h["pool"], h["image"], h["snap"], vsnap.since)


def drop(cluster: Cluster, vsnap: VolumeSnapshot, keep_change_token: bool) -> None:
    """After the backup of ``vsnap``: remove the older opencsbs snapshots of its image (``keep_change_token``), or
    its own snapshot (a failed backup)."""
    h = vsnap.handle["rbd"]
    if not keep_change_token:
        cluster.remove_snapshot(h["pool"], h["image"], h["snap"])
        return
    for s in cluster.list_snapshots(h["pool"], h["image"], missing_ok=True):
        if is_opencsbs_snapshot(s.name) and s.name != h["snap"] and s.id < h["snap_id"]:
            cluster.remove_snapshot(h["pool"], h["image"], s.name)


def prune(cluster: Cluster, pool: str, image: str, wanted: set[str], grace_seconds: float) -> int:
    """Remove the opencsbs snapshots of one image not in ``wanted`` and older than ``grace_seconds``."""
    dropped = 0
    now = time.time()
    for s in cluster.list_snapshots(pool, image, missing_ok=True):
        if not is_opencsbs_snapshot(s.name) or s.name in wanted:
            continue
        if s.created is not None and now - s.created.timestamp() < grace_seconds:
            continue
        if cluster.remove_snapshot(pool, image, s.name):
            dropped += 1
    return dropped
