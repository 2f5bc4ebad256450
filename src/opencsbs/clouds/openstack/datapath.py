"""The OpenStack driver's data side: Cinder volumes on Ceph RBD, read and written straight through librbd.

Composed into :class:`~opencsbs.clouds.openstack.driver.OpenStackDriver` (which keeps the inventory); every cloud
call is made with the service user of ``cloud.openstack_cloud`` (it needs the admin role: it reads the volumes'
``os-vol-host-attr:host`` and other projects' servers), and every server and volume is checked to belong to the
caller's project first, whatever id was sent.

Where a volume lives: its Cinder ``host`` is ``host@backend#pool``; ``backend`` must be a key of
``cloud.openstack_rbd_backends`` (:class:`~opencsbs.config.RbdSettings`: ``ceph.conf``, Ceph user and keyring, pool,
image name). The image is ``<pool>/volume-<id>`` (Cinder's ``volume_name_template``; a migrated volume's
``os-vol-mig-status-attr:name_id`` replaces the id). Other backends are refused with CSBS.6061 naming the backend.

Backup (:meth:`RbdDataPath.snapshot_server`), the way block-level backup tools for Ceph work:

- Every attached volume gets an RBD snapshot named ``backup.<name>.snap.opencsbs`` (``<name>`` = the engine's
  ``csbs-<job id>``) made directly with librbd: no Cinder snapshot record, no tenant quota used, no attach. The
  name follows Cinder's own pattern for backup snapshots (``^backup\\.(...)\\.snap\\.(.+)$``), which Cinder's RBD
  driver removes before it deletes a volume, so a tenant can still delete a volume opencsbs has backed up.
- One instant for all disks: a server that runs with more than one volume is paused through Nova
  (``os-pause``), all snapshots are taken, and it is unpaused; the pause is bounded by
  ``cloud.openstack_pause_timeout`` (beyond it the snapshots are dropped and the step retried), measured and
  logged (``pause_seconds`` in the snapshot's handle). A single volume, or a server that is shut off, needs no
  pause (one RBD snapshot is crash-consistent). Before pausing, the server's metadata gets
  ``opencsbs_paused=<name>``; a worker that died while the server was paused is followed by one that finds the
  mark, unpauses and removes it (retry of the step, or the failed job's clean-up).
- Snapshots are taken again from scratch when a retry finds only some of them (they would not share an
  instant); a retry that finds all of them reuses them.
- The change token of a disk is its RBD snapshot name; an incremental backup asks librbd ``diff_iterate``
  between the previous backup's snapshot and the new one (byte extents; librbd uses the object map where
  ``fast-diff`` is enabled). A base snapshot that is gone, or not older, gives None: a full read, never a wrong
  delta.
- After a successful backup the snapshot stays (the next incremental's base) and every older opencsbs snapshot
  of the same images is removed; after a failed one its snapshot is removed. Housekeeping
  (:meth:`RbdDataPath.prune_change_tracking`) removes the opencsbs snapshots of every image of the configured
  pools that no kept backup or unfinished job names, once older than :attr:`RbdDataPath.snapshot_grace_seconds`.

Restore: the server is stopped through Nova (waiting for SHUTOFF), each target volume's image is written through
librbd (:class:`~opencsbs.clouds.rbd.ImageWriter`: zero ranges with ``write_zeroes``), the server started again
when the restore asks ``power_on``. A volume attached to a server that is not shut off is never written. The RBD
snapshots stay valid bases: ``diff_iterate`` sees the restore's writes like any other.

Restore drills (:meth:`RbdDataPath.open_scratch`): each disk backup is restored into a scratch RBD image
``opencsbs-drill-<name>`` made (thin) in the pool of the backed-up volume's backend, or in that backend's
``drill_pool`` when set (the first configured backend when the volume is gone or not on RBD), read back through
librbd and removed: no Cinder record, no tenant quota, no server touched.

Errors: Nova/Cinder unreachable → :class:`CloudUnavailable` (the job retries, then fails with CSBS.9999); Ceph
unreachable → :class:`~opencsbs.clouds.rbd.CephUnavailable` (the same); a deleted volume, a full cluster, a
missing image → CSBS.9999 with a sentence naming the volume (see :func:`opencsbs.clouds.rbd.ceph_error`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opencsbs.clouds.base import CloudContext, CloudUnavailable, ScratchVolume, ServerSnapshot, VolumeSnapshot
from opencsbs.clouds.openstack.translate import cinder_backend
from opencsbs.clouds.rbd import Cluster, RbdScratch, is_opencsbs_snapshot, rbd_snapshot_name
from opencsbs.core import codes
from opencsbs.core.blocks import BlockReader, BlockWriter, Range
from opencsbs.core.errors import CSBSError

log = logging.getLogger(__name__)

#: Nova server metadata key marking a server paused by opencsbs (value: the snapshot name)
PAUSE_MARK = "opencsbs_paused"


@dataclass(frozen=True)
class _Target:
    """Where one Cinder volume's bytes are: its backend's settings and cluster, pool and image."""

    volume_id: str
    backend: str
    cluster: Cluster
    pool: str
    image: str
    read_ahead: int


class RbdDataPath:
    """Data side of :class:`~opencsbs.clouds.openstack.driver.OpenStackDriver` (see the module docstring).

    ``connection``: callable giving the service user's openstacksdk connection; ``translate``: callable turning an
    openstacksdk/keystoneauth exception into the :class:`CSBSError` to raise; ``count_call``: the driver's call
    counter.
    """

    #: opencsbs snapshots younger than this are never removed by housekeeping (a backup may be making them)
    snapshot_grace_seconds: float = 3600.0
    #: seconds between two polls of a server's state while waiting for Nova
    poll_seconds: float = 0.25

    def __init__(self, cloud_settings, connection: Callable[[], Any], translate: Callable[[Exception], CSBSError],
                 count_call: Callable[[int], None]):
        self.settings = dict(cloud_settings.openstack_rbd_backends)
        self.pause_timeout = float(cloud_settings.openstack_pause_timeout)
        self.power_timeout = float(cloud_settings.openstack_power_timeout)
        self._connection = connection
        self._translate = translate
        self._count = count_call
        self._clusters: dict[str, Cluster] = {
            name: Cluster(s.conf, s.user, s.keyring, connect_timeout=s.connect_timeout, op_timeout=s.op_timeout)
            for name, s in self.settings.items()
        }
        self._lock = threading.Lock()
        self._changed: dict[str, list[Range]] = {}

    @property
    def backends(self) -> frozenset[str]:
        """Names of the Cinder backends whose volumes can be read."""
        return frozenset(self.settings)

    def check_settings(self) -> None:
        """Raise ``ValueError`` with one line naming the first missing piece (bindings, ceph.conf, keyring, image
        name template). No network call."""
        for name, s in self.settings.items():
            if "{id}" not in s.image_name:
                raise ValueError(f"cloud.openstack_rbd_backends.{name}.image_name must contain {{id}}")
            try:
                self._clusters[name].check_settings()
            except ValueError as exc:
                raise ValueError(f"cloud.openstack_rbd_backends.{name}: {exc}") from None

    def close(self) -> None:
        for cluster in self._clusters.values():
            cluster.close()

    # -- cloud calls ----------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, not_found: CSBSError | None = None, **kwargs: Any) -> Any:
        """One openstacksdk call with the service user; a 404 raises ``not_found`` (when given), other cloud
        failures the driver's translation (:class:`CloudUnavailable` mostly)."""
        try:
            return fn(*args, **kwargs)
        except CSBSError:
            raise
        except Exception as exc:  # noqa: BLE001 - every cloud failure becomes one clear answer
            if not_found is not None and _status(exc) == 404:
                raise not_found from exc
            raise self._translate(exc) from exc

    def _server(self, conn, ctx: CloudContext | None, server_id: str):
        """The Nova server if ``ctx`` may see it (None: any project); else CSBS.6000."""
        server = self._call(conn.compute.get_server, server_id, not_found=CSBSError(codes.SERVER_NOT_FOUND))
        if ctx is not None and not ctx.all_tenants and server.project_id != ctx.project_id:
            raise CSBSError(codes.SERVER_NOT_FOUND)
        return server

    def _volume(self, conn, ctx: CloudContext | None, volume_id: str, missing: CSBSError):
        """The Cinder volume if ``ctx``'s project owns it (None: any project); else ``missing``."""
        volume = self._call(conn.block_storage.get_volume, volume_id, not_found=missing)
        if ctx is not None and not ctx.all_tenants and volume.project_id != ctx.project_id:
            raise missing
        return volume

    def _target(self, volume) -> _Target:
        """Where ``volume``'s bytes are; CSBS.6061 naming the backend when it is not a configured RBD backend."""
        host = getattr(volume, "host", None)
        backend = cinder_backend(host)
        if backend is None or backend not in self.settings:
            where = f"Cinder backend {backend}" if backend else f"Cinder host {host or '(not shown to opencsbs)'}"
            raise CSBSError(codes.POD_NOT_SUPPORTED, message=(
                f"{codes.POD_NOT_SUPPORTED.format()}: volume {volume.id} is on {where}, which is not a Ceph RBD "
                f"backend opencsbs reads (cloud.openstack_rbd_backends: {', '.join(sorted(self.settings)) or 'none'})"))
        s = self.settings[backend]
        name_id = getattr(volume, "migration_id", None) or volume.id
        return _Target(volume.id, backend, self._clusters[backend], s.pool, s.image_name.format(id=name_id),
                       s.read_ahead)

    def _target_of(self, vsnap: VolumeSnapshot) -> _Target:
        h = vsnap.handle
        backend = h["backend"]
        if backend not in self._clusters:
            raise CSBSError(codes.POD_NOT_SUPPORTED, message=(
                f"{codes.POD_NOT_SUPPORTED.format()}: backend {backend} of volume {vsnap.volume_id} is no longer "
                "in cloud.openstack_rbd_backends"))
        return _Target(vsnap.volume_id, backend, self._clusters[backend], h["pool"], h["image"],
                       self.settings[backend].read_ahead)

    def _wait(self, conn, server_id: str, done: Callable[[Any], bool], what: str, timeout: float):
        """Poll the server until ``done(server)``; CloudUnavailable after ``timeout`` seconds, CSBS.9999 if it
        turns ERROR."""
        deadline = time.monotonic() + timeout
        while True:
            server = self._call(conn.compute.get_server, server_id)
            if done(server):
                return server
            if (server.status or "").upper() == "ERROR":
                raise CSBSError(codes.INTERNAL_ERROR, message=f"{what}: server {server_id} went into ERROR")
            if time.monotonic() >= deadline:
                raise CloudUnavailable(f"{what} (server {server_id} still {server.status}"
                                       f"{'/' + server.task_state if server.task_state else ''} after {timeout:g} s)")
            time.sleep(self.poll_seconds)

    @staticmethod
    def _settled(status: str) -> Callable[[Any], bool]:
        return lambda s: (s.status or "").upper() == status and not s.task_state

    # -- pause ------------------------------------------------------------------------------------------------------
    def _unpause_if_marked(self, conn, server, name: str | None = None) -> bool:
        """Unpause ``server`` when opencsbs's mark says it paused it (for snapshot ``name``, or any); True if so."""
        meta = dict(getattr(server, "metadata", None) or {})
        mark = meta.get(PAUSE_MARK)
        if not mark or (name is not None and mark != name):
            return False
        if (server.status or "").upper() == "PAUSED":
            log.warning("server %s was left paused by an interrupted backup (%s): unpausing it", server.id, mark)
            self._call(conn.compute.unpause_server, server)
            self._wait(conn, server.id, self._settled("ACTIVE"), "unpausing", self.power_timeout)
        self._call(conn.compute.delete_server_metadata, server, [PAUSE_MARK])
        return True

    # -- backup -----------------------------------------------------------------------------------------------------
    def snapshot_server(self, ctx: CloudContext, server_id: str, name: str,
                        since: dict[str, str] | None = None) -> ServerSnapshot:
        conn = self._connection()
        server = self._server(conn, ctx, server_id)
        if self._unpause_if_marked(conn, server, name):
            server = self._server(conn, ctx, server_id)
        status = (server.status or "").upper()
        if status not in ("ACTIVE", "SHUTOFF"):
            raise CSBSError(codes.SERVER_STATUS_NOT_ALLOWED, server_id, status)
        attached = [a.get("id") for a in (server.attached_volumes or []) if a.get("id")]
        if not attached:
            raise CSBSError(codes.NO_VOLUME, server_id)
        volumes = [self._volume(conn, ctx, vid, CSBSError(codes.INTERNAL_ERROR, message=(
            f"volume {vid} attached to server {server_id} is not a volume of its project"))) for vid in attached]
        targets = [self._target(v) for v in volumes]
        snap = rbd_snapshot_name(name)
        for t in targets:
            if not t.cluster.exists(t.pool, t.image):
                raise CSBSError(codes.INTERNAL_ERROR, message=(
                    f"volume {t.volume_id}: its RBD image {t.pool}/{t.image} does not exist in Ceph"))
        existing = [any(s.name == snap for s in t.cluster.list_snapshots(t.pool, t.image)) for t in targets]
        pause_seconds = None
        if all(existing):
            log.info("snapshot %s of server %s already taken; reusing it", name, server_id)
        else:
            for t, made in zip(targets, existing, strict=True):
                if made:  # a partial set from an interrupted attempt: not one instant
                    t.cluster.remove_snapshot(t.pool, t.image, snap)
            pause = status == "ACTIVE" and len(targets) > 1
            pause_seconds = self._snapshot_all(conn, server, targets, snap, name, pause)
        root = getattr(server, "root_device_name", None)
        snaps = []
        for volume, t in zip(volumes, targets, strict=True):
            by_name = {s.name: s for s in t.cluster.list_snapshots(t.pool, t.image)}
            info = by_name.get(snap)
            if info is None:
                raise CSBSError(codes.INTERNAL_ERROR, message=(
                    f"the snapshot of volume {t.volume_id} ({t.pool}/{t.image}@{snap}) vanished"))
            base = (since or {}).get(t.volume_id)
            usable = base if base in by_name and by_name[base].id < info.id else None
            device = next((a.get("device") for a in (volume.attachments or []) if a.get("server_id") == server_id),
                          None)
            bootable = device == root if root and device else bool(getattr(volume, "is_bootable", False))
            snaps.append(VolumeSnapshot(
                volume_id=t.volume_id, snapshot_id=f"{t.pool}/{t.image}@{snap}", size=info.size, device=device,
                bootable=bootable, change_token=snap, since=usable,
                handle={"backend": t.backend, "pool": t.pool, "image": t.image, "snap": snap, "snap_id": info.id}))
        handle: dict[str, Any] = {"rbd_snapshot": snap}
        if pause_seconds is not None:
            handle["pause_seconds"] = round(pause_seconds, 3)
        return ServerSnapshot(server_id=server_id, name=name, volumes=tuple(snaps), handle=handle)

    def _snapshot_all(self, conn, server, targets: Sequence[_Target], snap: str, name: str,
                      pause: bool) -> float | None:
        """Snapshot every target at one instant (paused when ``pause``); the seconds the server was paused."""
        if not pause:
            for t in targets:
                t.cluster.create_snapshot(t.pool, t.image, snap)
            return None
        self._call(conn.compute.set_server_metadata, server, **{PAUSE_MARK: name})
        started = time.monotonic()
        try:
            self._call(conn.compute.pause_server, server)
            self._wait(conn, server.id, self._settled("PAUSED"), "pausing", self.pause_timeout)
            paused_at = time.monotonic()
            for t in targets:
                if time.monotonic() - started > self.pause_timeout:
                    raise CloudUnavailable(f"snapshotting the volumes of server {server.id} (longer than the "
                                           f"{self.pause_timeout:g} s a server may stay paused)")
                t.cluster.create_snapshot(t.pool, t.image, snap)
        except BaseException:
            for t in targets:
                try:
                    t.cluster.remove_snapshot(t.pool, t.image, snap)
                except Exception:  # noqa: BLE001 - housekeeping removes it later
                    log.warning("could not remove partial snapshot %s/%s@%s", t.pool, t.image, snap, exc_info=True)
            self._unpause(conn, server, started)
            raise
        seconds = self._unpause(conn, server, started)
        log.info("server %s paused %.2f s (%.2f s after Nova reported it paused) while %d volumes were "
                 "snapshotted", server.id, seconds, time.monotonic() - paused_at, len(targets))
        return seconds

    def _unpause(self, conn, server, started: float) -> float:
        """Unpause (if paused) and remove the mark; seconds since ``started``."""
        current = self._call(conn.compute.get_server, server.id)
        if (current.status or "").upper() == "PAUSED" or current.task_state == "pausing":
            if current.task_state == "pausing":
                self._wait(conn, server.id, self._settled("PAUSED"), "pausing", self.power_timeout)
            self._call(conn.compute.unpause_server, server)
        seconds = time.monotonic() - started
        self._wait(conn, server.id, lambda s: (s.status or "").upper() != "PAUSED" and not s.task_state,
                   "unpausing", self.power_timeout)
        self._call(conn.compute.delete_server_metadata, server, [PAUSE_MARK])
        return seconds

    def open_snapshot(self, snapshot: VolumeSnapshot) -> BlockReader:
        t = self._target_of(snapshot)
        with self._lock:
            focus = self._changed.pop(snapshot.snapshot_id, None)
        return t.cluster.open_reader(t.pool, t.image, snapshot.handle["snap"], read_ahead=t.read_ahead, focus=focus)

    def changed_ranges(self, snapshot: VolumeSnapshot) -> Sequence[Range] | None:
        if not snapshot.since:
            return None
        t = self._target_of(snapshot)
        ranges = t.cluster.changed_ranges(t.pool, t.image, snapshot.handle["snap"], snapshot.since)
        if ranges is not None:
            with self._lock:  # the reader reads ahead only where the bank will read
                self._changed[snapshot.snapshot_id] = list(ranges)
                while len(self._changed) > 256:
                    self._changed.pop(next(iter(self._changed)))
        return ranges

    def delete_snapshot(self, snapshot: ServerSnapshot, keep_change_token: bool = True) -> None:
        snap = rbd_snapshot_name(snapshot.name)
        if not snapshot.volumes:
            self._delete_unrecorded(snapshot.server_id, snapshot.name)
            return
        for vsnap in snapshot.volumes:
            t = self._target_of(vsnap)
            if not keep_change_token:
                t.cluster.remove_snapshot(t.pool, t.image, snap)
                continue
            own = vsnap.handle.get("snap_id")
            for s in self._own_snapshots(t):
                if s.name != snap and own is not None and s.id < own:
                    t.cluster.remove_snapshot(t.pool, t.image, s.name)

    @staticmethod
    def _own_snapshots(t: _Target):
        """opencsbs's snapshots of the target's image, oldest first (none when the image is gone)."""
        return [s for s in t.cluster.list_snapshots(t.pool, t.image, missing_ok=True) if is_opencsbs_snapshot(s.name)]

    def _delete_unrecorded(self, server_id: str, name: str) -> None:
        """A backup failed before recording its snapshot: unpause the server if it was left paused, and remove
        the RBD snapshot ``name`` from each of its volumes found on an RBD backend."""
        conn = self._connection()
        try:
            server = self._server(conn, None, server_id)
        except CSBSError:
            return  # the server is gone: housekeeping removes what is left
        self._unpause_if_marked(conn, server, name)
        snap = rbd_snapshot_name(name)
        for a in server.attached_volumes or []:
            try:
                t = self._target(self._volume(conn, None, a.get("id"), CSBSError(codes.INTERNAL_ERROR)))
            except CSBSError:
                continue
            t.cluster.remove_snapshot(t.pool, t.image, snap)

    def prune_change_tracking(self, needed: dict[str, set[str]]) -> int:
        """Remove opencsbs's RBD snapshots (``backup.csbs-*.snap.opencsbs``) of the images of every configured
        pool that no kept backup or unfinished job of the volume names, once older than
        :attr:`snapshot_grace_seconds`. Returns how many were removed."""
        dropped = 0
        now = time.time()
        seen: set[tuple[str, str]] = set()
        for backend, s in self.settings.items():
            cluster = self._clusters[backend]
            prefix, _, suffix = s.image_name.partition("{id}")
            if (cluster.conf, s.pool) in seen:
                continue
            seen.add((cluster.conf, s.pool))
            for image in cluster.list_images(s.pool):
                if not (image.startswith(prefix) and image.endswith(suffix)):
                    continue
                volume_id = image[len(prefix):len(image) - len(suffix)] if suffix else image[len(prefix):]
                wanted = needed.get(volume_id, set())
                t = _Target(volume_id, backend, cluster, s.pool, image, s.read_ahead)
                for snap in self._own_snapshots(t):
                    if snap.name in wanted:
                        continue
                    if snap.created is not None and now - snap.created.timestamp() < self.snapshot_grace_seconds:
                        continue
                    if cluster.remove_snapshot(s.pool, image, snap.name):
                        dropped += 1
        return dropped

    # -- restore drills -----------------------------------------------------------------------------------------------
    def _scratch_place(self, volume_id: str | None) -> tuple[str, Cluster, str]:
        """``(backend, cluster, pool)`` for the scratch image of a drill of ``volume_id``: its backend's
        ``drill_pool`` or pool; the first configured backend when the volume is gone or not on RBD."""
        backend = None
        if volume_id:
            try:
                backend = self._target(self._volume(self._connection(), None, volume_id,
                                                    CSBSError(codes.INTERNAL_ERROR))).backend
            except CSBSError as exc:
                if isinstance(exc, CloudUnavailable):
                    raise
                log.info("drill scratch for volume %s: %s; using the first RBD backend", volume_id, exc.error_msg)
        if backend is None:
            if not self.settings:
                raise CSBSError(codes.INTERNAL_ERROR, message="no RBD backend configured for a drill's scratch image "
                                                              "(cloud.openstack_rbd_backends)")
            backend = sorted(self.settings)[0]
        s = self.settings[backend]
        return backend, self._clusters[backend], s.drill_pool or s.pool

    @staticmethod
    def scratch_image(name: str) -> str:
        """Name of the scratch image of drill disk ``name``."""
        return f"opencsbs-drill-{name}"

    def open_scratch(self, volume_id: str | None, size: int, name: str) -> ScratchVolume:
        """A thin scratch RBD image of ``size`` bytes for a drill (see the module docstring); a leftover of the
        same name is replaced. Raises :class:`CephUnavailable`, :class:`CloudUnavailable`, CSBS.9999."""
        backend, cluster, pool = self._scratch_place(volume_id)
        image = self.scratch_image(name)
        cluster.create_image(pool, image, size)
        return RbdScratch(cluster, pool, image, in_flight=self.settings[backend].read_ahead)

    def remove_scratch(self, volume_id: str | None, name: str) -> None:
        """Remove drill disk ``name``'s scratch image wherever :meth:`open_scratch` may have made it."""
        image = self.scratch_image(name)
        seen: set[tuple[str | None, str]] = set()
        for backend, s in self.settings.items():
            for pool in {s.drill_pool or s.pool, s.pool}:
                if (s.conf and str(s.conf), pool) in seen:
                    continue
                seen.add((s.conf and str(s.conf), pool))
                self._clusters[backend].remove_image(pool, image)

    # -- restore ------------------------------------------------------------------------------------------------------
    def open_volume_writer(self, ctx: CloudContext, volume_id: str) -> BlockWriter:
        conn = self._connection()
        volume = self._volume(conn, ctx, volume_id, CSBSError(codes.VOLUMES_NOT_IN_TARGET, volume_id))
        t = self._target(volume)
        for a in volume.attachments or []:
            sid = a.get("server_id")
            if not sid:
                continue
            server = self._server(conn, None, sid)
            if (server.status or "").upper() != "SHUTOFF":
                raise CSBSError(codes.INTERNAL_ERROR, message=(
                    f"volume {volume_id} is in use by server {sid} ({server.status}): it is only written while "
                    "the server is shut off"))
        return t.cluster.open_writer(t.pool, t.image, in_flight=t.read_ahead)

    def power_off(self, ctx: CloudContext, server_id: str) -> bool:
        conn = self._connection()
        server = self._server(conn, ctx, server_id)
        self._unpause_if_marked(conn, server)
        server = self._server(conn, ctx, server_id)
        if (server.status or "").upper() == "SHUTOFF" and not server.task_state:
            return False
        if (server.status or "").upper() == "SHUTOFF":  # a stop already under way
            self._wait(conn, server_id, self._settled("SHUTOFF"), "stopping", self.power_timeout)
            return True
        self._call(conn.compute.stop_server, server)
        self._wait(conn, server_id, self._settled("SHUTOFF"), "stopping", self.power_timeout)
        return True

    def power_on(self, ctx: CloudContext, server_id: str) -> None:
        conn = self._connection()
        server = self._server(conn, ctx, server_id)
        if (server.status or "").upper() == "ACTIVE" and not server.task_state:
            return
        if (server.status or "").upper() == "SHUTOFF" and not server.task_state:
            self._call(conn.compute.start_server, server)
        self._wait(conn, server_id, self._settled("ACTIVE"), "starting", self.power_timeout)


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an openstacksdk/keystoneauth exception, if any."""
    return getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
