"""The libvirt driver's data side (a second, read-write connection, opened lazily; see docs/clouds.md).

- **Running domain**: one pull-mode ``backupBegin`` over every disk, with a ``domaincheckpoint`` (a persistent
  dirty bitmap on every qcow2 disk) named after the snapshot: QEMU exports each disk's point-in-time image over
  NBD on a unix socket (copy-before-write into a scratch qcow2 per disk). Each export is copied with
  ``qemu-img convert`` into a sparse raw file under ``<scratch>/<snapshot name>/``; a qcow2 disk whose ``since``
  token names a checkpoint that still has its bitmap on that disk is exported incrementally, and its dirty
  extents (``qemu-img map`` with ``x-dirty-bitmap``) are saved as the changed ranges. Then the job is ended;
  the checkpoint stays as the base of the next incremental backup (change token = checkpoint name). Older
  checkpoints made by opencsbs (``<description>opencsbs</description>``) other than the new one and the ``since``
  ones are deleted. If libvirt refuses the incremental export (bitmap lost), the disk is read whole.
  Housekeeping (:meth:`LibvirtDataPath.prune_change_tracking`) deletes the ones no kept backup needs.
- **Shut-off domain**: each disk image is copied with ``qemu-img convert`` (its lock keeps QEMU from starting on
  it meanwhile); no change token (the bank de-duplicates by content).
- **RBD network disks** (a domain whose disks are all ``<source protocol='rbd'>``): RBD snapshots through librbd,
  changed extents from ``diff_iterate``, restores written through librbd (:mod:`.rbd_disks`, settings
  ``cloud.libvirt_rbd``).
- ``snapshot.json`` written last marks a snapshot complete; a retry of the same name ends a leftover backup job,
  deletes a leftover checkpoint of that name and starts over.
- **Restores** write raw images in place and qcow2 images through a raw scratch file converted to qcow2 and
  renamed over the image; every checkpoint of the domain is deleted first (its bitmaps would not show the
  restore's writes, so no later incremental may rest on them). The domain must be shut off (the engine powers it
  off; ``power_off`` is a hard ``destroy``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from opencsbs.blockio.files import FileBlockReader, FileBlockWriter
from opencsbs.clouds.base import (CloudContext, CloudUnavailable, DataPath, DataPathUnsupported, ServerSnapshot,
                                  VolumeSnapshot)
from opencsbs.clouds.libvirt import qemu, rbd_disks
from opencsbs.clouds.libvirt.config import LibvirtConfig
from opencsbs.clouds.libvirt.domain import DiskInfo, DomainInfo, parse_domain_xml, system_disk, volume_id
from opencsbs.clouds.libvirt.inventory import ensure_event_loop, libvirt_binding
from opencsbs.core import codes
from opencsbs.core.blocks import BlockReader, BlockWriter, Range
from opencsbs.core.errors import CSBSError

log = logging.getLogger(__name__)

#: ``<description>`` of the checkpoints opencsbs makes (only those are pruned)
CHECKPOINT_DESCRIPTION = "opencsbs"


class LibvirtDataPath(DataPath):
    """Snapshots, readers, restore writers and power of the domains of one libvirt host.

    The data half of :class:`~opencsbs.clouds.libvirt.driver.LibvirtDriver`: it uses the attributes its inventory
    half (:class:`~opencsbs.clouds.libvirt.inventory.LibvirtInventory`) sets on the same object (``name``, ``uri``,
    ``default_project``, ``rbd_settings``, ``_rbd``, ``_lock``, ``count_call``).
    """

    def __init__(self, config: LibvirtConfig) -> None:
        self.scratch_dir = Path(config.scratch_dir)
        self._rw_conn = None
        self._rbd_changed: dict[str, list[Range]] = {}

    def _rw(self):
        """The read-write connection (opened lazily). Raises :class:`CloudUnavailable`."""
        libvirt = libvirt_binding()
        with self._lock:
            if self._rw_conn is not None:
                try:
                    if self._rw_conn.isAlive():
                        return self._rw_conn
                except libvirt.libvirtError:
                    pass
                self._rw_conn = None
            ensure_event_loop(libvirt)
            try:
                conn = libvirt.open(self.uri)
                conn.setKeepAlive(5, 3)
            except libvirt.libvirtError as exc:
                raise CloudUnavailable(f"libvirt {self.uri}: {exc.get_error_message()}") from exc
            self._rw_conn = conn
            return conn

    def _error(self, exc) -> CSBSError:
        """A libvirt error as the CSBS error to raise: no such domain → CSBS.6000; connection trouble →
        :class:`CloudUnavailable` (and the connection is dropped); anything else → CSBS.9999 (500)."""
        libvirt = libvirt_binding()
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return CSBSError(codes.SERVER_NOT_FOUND)
        conn, alive = self._rw_conn, False
        try:
            alive = conn is not None and conn.isAlive()
        except libvirt.libvirtError:
            pass
        if not alive or code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT,
                                 libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_OPERATION_TIMEOUT):
            with self._lock:
                if self._rw_conn is conn:
                    self._rw_conn = None
            return CloudUnavailable(f"libvirt {self.uri}: {exc.get_error_message()}")
        return CSBSError(codes.INTERNAL_ERROR, message=f"libvirt: {exc.get_error_message()}")

    def _visible(self, ctx: CloudContext, info: DomainInfo) -> bool:
        return ctx.all_tenants or (info.project_id or self.default_project) == ctx.project_id

    def _domain(self, conn, ctx: CloudContext, server_id: str):
        """``(virDomain, DomainInfo)`` of ``server_id`` if ``ctx`` may see it; else ``CSBSError(SERVER_NOT_FOUND)``."""
        self.count_call(2)
        dom = conn.lookupByUUIDString(server_id)
        info = parse_domain_xml(dom.XMLDesc(0))
        if not self._visible(ctx, info):
            raise CSBSError(codes.SERVER_NOT_FOUND)
        return dom, info

    def _nbd_socket(self, folder: Path) -> str:
        # unix socket paths are limited to 107 bytes: a short name in the temp dir, unique per snapshot folder
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:20]
        return str(Path(tempfile.gettempdir()) / f"opencsbs-nbd-{digest}.sock")

    def _end_backup_job(self, dom, socket: str) -> None:
        """End the domain's backup job if it is the one serving ``socket`` (a leftover of an interrupted run)."""
        libvirt = libvirt_binding()
        try:
            xml = dom.backupGetXMLDesc(0)
        except libvirt.libvirtError:
            return  # no backup job
        if socket in xml:
            self._abort_backup_job(dom)

    def _abort_backup_job(self, dom, timeout: float = 60.0) -> None:
        """End the domain's backup job and wait until it is gone (libvirt ends it asynchronously, once QEMU's
        block jobs are cancelled); the checkpoint it made stays."""
        libvirt = libvirt_binding()
        self.count_call()
        try:
            dom.abortJob()
        except libvirt.libvirtError:
            log.debug("backup job of %s already ended", dom.UUIDString(), exc_info=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dom.backupGetXMLDesc(0)
            except libvirt.libvirtError:
                return
            time.sleep(0.05)
        log.warning("backup job of %s still running %.0f s after it was aborted", dom.UUIDString(), timeout)

    def _checkpoints(self, dom) -> dict[str, tuple[str, frozenset[str]]]:
        """name -> (description, targets with a bitmap) of every checkpoint of ``dom``."""
        self.count_call()
        out = {}
        for cp in dom.listAllCheckpoints(0):
            try:
                out[cp.getName()] = qemu.checkpoint_bitmap_disks(cp.getXMLDesc(0))
            except Exception:  # noqa: BLE001 - a checkpoint deleted meanwhile, or XML we cannot read
                continue
        return out

    def _delete_checkpoint(self, dom, name: str) -> None:
        """Delete checkpoint ``name`` of ``dom`` with its bitmaps (only its metadata if libvirt cannot reach the
        bitmaps); a missing checkpoint is fine."""
        libvirt = libvirt_binding()
        try:
            cp = dom.checkpointLookupByName(name, 0)
        except libvirt.libvirtError:
            return
        self.count_call()
        try:
            cp.delete(0)
        except libvirt.libvirtError:
            log.info("checkpoint %s of %s: deleting its metadata only", name, dom.UUIDString(), exc_info=True)
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)

    def snapshot_server(
        self, ctx: CloudContext, server_id: str, name: str, since: dict[str, str] | None = None
    ) -> ServerSnapshot:
        libvirt = libvirt_binding()
        folder = self.scratch_dir / name
        meta = folder / "snapshot.json"
        if meta.exists():
            return ServerSnapshot.from_dict(json.loads(meta.read_text()))
        conn = self._rw()
        try:
            dom, info = self._domain(conn, ctx, server_id)
            disks = [(volume_id(info, d), d) for d in info.disks]
            rbd = [(vid, d, *loc) for vid, d in disks if (loc := rbd_disks.rbd_location(d)) is not None]
            if rbd:
                return self._snapshot_rbd(dom, info, disks, rbd, server_id, name, since or {})
            for _vid, d in disks:
                if not d.source or d.source_type not in ("file", "block"):
                    raise DataPathUnsupported(self.name, f"back up disk {d.target} of type {d.source_type}")
            socket = self._nbd_socket(folder)
            self._end_backup_job(dom, socket)  # an interrupted earlier attempt of the same name
            self._delete_checkpoint(dom, name)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            if dom.isActive():
                snaps = self._snapshot_running(dom, info, disks, name, folder, socket, since or {})
            else:
                snaps = self._snapshot_stopped(info, disks, name, folder)
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc
        snapshot = ServerSnapshot(server_id=server_id, name=name, volumes=tuple(snaps), handle={"dir": str(folder)})
        tmp = folder / "snapshot.json.tmp"
        tmp.write_text(json.dumps(snapshot.to_dict()))
        os.replace(tmp, meta)
        return snapshot

    def _cluster(self):
        if self._rbd is None:
            raise DataPathUnsupported(self.name, "read or write RBD disks (cloud.libvirt_rbd is not set)")
        return self._rbd

    def _snapshot_rbd(self, dom, info: DomainInfo, disks, rbd, server_id: str, name: str,
                      since: dict[str, str]) -> ServerSnapshot:
        """A domain whose disks are all RBD network disks: RBD snapshots (suspended while several are taken)."""
        if len(rbd) != len(disks):
            raise DataPathUnsupported(self.name, f"back up domain {info.name}: it mixes RBD and other disks")
        cluster = self._cluster()
        self.count_call()
        snaps, paused = rbd_disks.snapshot_disks(cluster, rbd, name, since, bool(dom.isActive()), dom.suspend,
                                                 dom.resume, system_disk(info))
        handle = {"rbd": True, **({"pause_seconds": round(paused, 3)} if paused is not None else {})}
        return ServerSnapshot(server_id=server_id, name=name, volumes=tuple(snaps), handle=handle)

    def _volume_snapshot(self, info: DomainInfo, vid: str, d: DiskInfo, name: str, raw: Path,
                         token: str | None, since: str | None, changes: Path | None) -> VolumeSnapshot:
        return VolumeSnapshot(
            volume_id=vid,
            snapshot_id=f"{name}:{d.target}",
            size=os.stat(raw).st_size,
            device=f"/dev/{d.target}",
            bootable=d.target == system_disk(info),
            change_token=token,
            since=since,
            handle={"path": str(raw), "changes": str(changes) if changes else None},
        )

    def _snapshot_running(self, dom, info: DomainInfo, disks, name: str, folder: Path, socket: str,
                          since: dict[str, str]) -> list[VolumeSnapshot]:
        libvirt = libvirt_binding()
        checkpoints = self._checkpoints(dom)
        bitmap = {d.target: d.format == "qcow2" for _, d in disks}
        incremental = {}
        for vid, d in disks:
            token = since.get(vid)
            if bitmap[d.target] and token in checkpoints and d.target in checkpoints[token][1]:
                incremental[d.target] = token
        cp_xml = (qemu.checkpoint_xml(name, [(d.target, bitmap[d.target]) for _, d in disks], CHECKPOINT_DESCRIPTION)
                  if any(bitmap.values()) else None)

        def backup_xml(inc: dict[str, str]) -> str:
            return qemu.pull_backup_xml(socket, [(d.target, str(folder / f"{d.target}.fleece.qcow2"),
                                                  inc.get(d.target)) for _, d in disks])

        self.count_call()
        try:
            dom.backupBegin(backup_xml(incremental), cp_xml, 0)
        except libvirt.libvirtError as exc:
            if not incremental:
                raise
            log.warning("incremental backup of %s refused (%s); reading every disk whole", info.uuid,
                        exc.get_error_message())
            incremental = {}
            self._delete_checkpoint(dom, name)
            self.count_call()
            dom.backupBegin(backup_xml(incremental), cp_xml, 0)
        try:
            snaps = []
            for vid, d in disks:
                raw = folder / f"{d.target}.raw"
                qemu.copy_to_raw(qemu.nbd_url(socket, d.target), "raw", raw)
                changes = None
                if d.target in incremental:
                    changes = folder / f"{d.target}.changes.json"
                    extents = qemu.dirty_extents(socket, d.target, f"backup-{d.target}")
                    changes.write_text(json.dumps(extents))
                snaps.append(self._volume_snapshot(info, vid, d, name, raw, name if bitmap[d.target] else None,
                                                   incremental.get(d.target), changes))
        finally:
            self._abort_backup_job(dom)  # ends the pull-mode job; the checkpoint stays
        keep = {name, *since.values()}
        for old, (description, _disks) in checkpoints.items():
            if description == CHECKPOINT_DESCRIPTION and old not in keep:
                try:
                    self._delete_checkpoint(dom, old)
                except libvirt.libvirtError:
                    log.warning("could not delete old checkpoint %s of %s", old, info.uuid, exc_info=True)
        return snaps

    def _snapshot_stopped(self, info: DomainInfo, disks, name: str, folder: Path) -> list[VolumeSnapshot]:
        snaps = []
        for vid, d in disks:
            raw = folder / f"{d.target}.raw"
            qemu.copy_to_raw(d.source, d.format or "raw", raw)
            snaps.append(self._volume_snapshot(info, vid, d, name, raw, None, None, None))
        return snaps

    def open_snapshot(self, snapshot: VolumeSnapshot) -> BlockReader:
        if "rbd" in snapshot.handle:
            h = snapshot.handle["rbd"]
            with self._lock:
                focus = self._rbd_changed.pop(snapshot.snapshot_id, None)
            return self._cluster().open_reader(h["pool"], h["image"], h["snap"],
                                               read_ahead=self.rbd_settings.read_ahead, focus=focus)
        try:
            return FileBlockReader(Path(snapshot.handle["path"]), snapshot.size)
        except FileNotFoundError as exc:
            raise CSBSError(codes.INTERNAL_ERROR, message=f"snapshot {snapshot.snapshot_id} is gone") from exc

    def changed_ranges(self, snapshot: VolumeSnapshot) -> Sequence[Range] | None:
        if "rbd" in snapshot.handle:
            ranges = rbd_disks.changed_ranges(self._cluster(), snapshot)
            if ranges is not None:
                with self._lock:
                    self._rbd_changed[snapshot.snapshot_id] = ranges
                    while len(self._rbd_changed) > 256:
                        self._rbd_changed.pop(next(iter(self._rbd_changed)))
            return ranges
        path = snapshot.handle.get("changes")
        if not snapshot.since or not path or not os.path.exists(path):
            return None
        return [tuple(r) for r in json.loads(Path(path).read_text())]

    def delete_snapshot(self, snapshot: ServerSnapshot, keep_change_token: bool = True) -> None:
        """Remove the snapshot's folder; after a failed backup (``keep_change_token`` False) also the checkpoint
        of its name (no backup records it)."""
        rbd = [v for v in snapshot.volumes if "rbd" in v.handle]
        for vsnap in rbd:
            rbd_disks.drop(self._cluster(), vsnap, keep_change_token)
        if rbd:
            return
        folder = Path(snapshot.handle.get("dir") or self.scratch_dir / snapshot.name)
        shutil.rmtree(folder, ignore_errors=True)
        if keep_change_token:
            return
        libvirt = libvirt_binding()
        try:
            dom = self._rw().lookupByUUIDString(snapshot.server_id)
            if snapshot.name in self._checkpoints(dom):
                self._delete_checkpoint(dom, snapshot.name)
            if not snapshot.volumes and self._rbd is not None:  # failed before it was recorded
                info = parse_domain_xml(dom.XMLDesc(0))
                for d in info.disks:
                    loc = rbd_disks.rbd_location(d)
                    if loc is not None:
                        self._rbd.remove_snapshot(*loc, rbd_disks.rbd_snapshot_name(snapshot.name))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise self._error(exc) from exc

    #: opencsbs checkpoints younger than this are never pruned by housekeeping (a backup may have just made one
    #: and not yet recorded its name)
    checkpoint_grace_seconds: float = 3600.0

    def prune_change_tracking(self, needed: dict[str, set[str]]) -> int:
        """Delete the checkpoints opencsbs made (``<description>opencsbs</description>``) that no kept backup or
        unfinished job of any of the domain's disks names, once older than :attr:`checkpoint_grace_seconds`;
        domains with a backup job running are skipped. Returns how many were deleted."""
        libvirt = libvirt_binding()
        conn = self._rw()
        dropped = 0
        try:
            self.count_call()
            for dom in conn.listAllDomains(0):
                self.count_call()
                info = parse_domain_xml(dom.XMLDesc(0))
                try:
                    dom.backupGetXMLDesc(0)
                    continue  # a backup is running on it
                except libvirt.libvirtError:
                    pass
                wanted = set().union(*(needed.get(volume_id(info, d), set()) for d in info.disks))
                for d in info.disks:
                    loc = rbd_disks.rbd_location(d)
                    if loc is not None and self._rbd is not None:
                        dropped += rbd_disks.prune(self._rbd, *loc, needed.get(volume_id(info, d), set()),
                                                   self.checkpoint_grace_seconds)
                for cp in dom.listAllCheckpoints(0):
                    root = ET.fromstring(cp.getXMLDesc(0))
                    created = int((root.findtext("creationTime") or "0").strip() or 0)
                    if ((root.findtext("description") or "").strip() != CHECKPOINT_DESCRIPTION
                            or cp.getName() in wanted or time.time() - created < self.checkpoint_grace_seconds):
                        continue
                    self._delete_checkpoint(dom, cp.getName())
                    dropped += 1
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc
        return dropped

    def _find_disk(self, conn, ctx: CloudContext, vid: str):
        """``(virDomain, DomainInfo, DiskInfo)`` of the disk whose volume id is ``vid``, among the domains ``ctx``
        may see; else ``CSBSError(VOLUMES_NOT_IN_TARGET)``."""
        self.count_call()
        for dom in conn.listAllDomains(0):
            self.count_call()
            info = parse_domain_xml(dom.XMLDesc(0))
            if not self._visible(ctx, info):
                continue
            for d in info.disks:
                if volume_id(info, d) == vid:
                    return dom, info, d
        raise CSBSError(codes.VOLUMES_NOT_IN_TARGET, vid)

    def open_volume_writer(self, ctx: CloudContext, volume_id: str) -> BlockWriter:
        libvirt = libvirt_binding()
        conn = self._rw()
        try:
            dom, info, disk = self._find_disk(conn, ctx, volume_id)
            loc = rbd_disks.rbd_location(disk)
            if loc is not None:
                if dom.isActive():
                    raise CSBSError(codes.INTERNAL_ERROR,
                                    message=f"disk {volume_id} is in use by the running domain {info.name}")
                return self._cluster().open_writer(*loc, in_flight=self.rbd_settings.read_ahead)
            if not disk.source or disk.source_type not in ("file", "block") or (
                    disk.format == "qcow2" and disk.source_type != "file"):
                raise DataPathUnsupported(self.name, f"restore disk {disk.target} of type {disk.source_type}")
            if dom.isActive():
                raise CSBSError(codes.INTERNAL_ERROR,
                                message=f"disk {volume_id} is in use by the running domain {info.name}")
            # its bitmaps will not see the restore's writes: no later incremental may rest on them
            for cp in self._checkpoints(dom):
                self._delete_checkpoint(dom, cp)
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc
        fmt = disk.format or "raw"
        details = qemu.image_info(disk.source, fmt)
        size = int(details["virtual-size"])
        if fmt == "qcow2":
            return qemu.Qcow2Writer(Path(disk.source), size, self.scratch_dir, details.get("cluster-size"))
        if fmt != "raw":
            raise DataPathUnsupported(self.name, f"restore {fmt} images")
        return FileBlockWriter(Path(disk.source), size, truncate=False, create=False)

    def power_off(self, ctx: CloudContext, server_id: str) -> bool:
        libvirt = libvirt_binding()
        conn = self._rw()
        try:
            dom, _info = self._domain(conn, ctx, server_id)
            if not dom.isActive():
                return False
            self.count_call()
            try:
                dom.destroy()
            except libvirt.libvirtError:
                if dom.isActive():
                    raise
            return True
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc

    def power_on(self, ctx: CloudContext, server_id: str) -> None:
        libvirt = libvirt_binding()
        conn = self._rw()
        try:
            dom, _info = self._domain(conn, ctx, server_id)
            if not dom.isActive():
                self.count_call()
                dom.create()
        except libvirt.libvirtError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        """Close the read-write connection."""
        with self._lock:
            rw, self._rw_conn = self._rw_conn, None
        if rw is not None:
            try:
                rw.close()
            except Exception:  # noqa: BLE001
                pass
