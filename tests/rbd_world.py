"""Helpers for the RBD data-path tests: Cinder RBD volumes, their images in Ceph, and servers booted from them under
libvirt/QEMU on the test OpenStack (scripts/services/ceph.sh, then scripts/services/openstack.sh).

The stack: a single-node Ceph (pools ``volumes`` and ``rbd``, user ``client.opencsbs`` read-write on both), Cinder's
RBD backend ``ceph`` (volume type ``rbd`` -> pool ``volumes``, image ``volume-<volume id>``) beside its fake backend,
and the Nova compute host ``kvm-host`` (AZ ``az-kvm``) running the libvirt driver on a private libvirtd. Variables
come from ``$OPENCSBS_WORK/env/ceph.env`` and ``openstack.env`` (``OPENCSBS_TEST_CEPH_*``, ``OPENCSBS_TEST_OS_RBD*``).

Use the session fixture ``rbd_world`` (tests/conftest.py): one :class:`RbdWorld` per test session, so the cluster
connection, the OpenStack connections and the cleanup are shared; everything it made is removed at the end
(servers force-deleted, Cinder snapshots, RBD snapshots left on its images by anyone, then volumes). Its
``require()`` skips outside CI and fails under CI when the stack is missing.

The guest: :data:`GUEST_BOOT_SECTOR`, a 512-byte BIOS boot sector (source ``tests/data/guest-boot.S``). Written into
a volume's image at offset 0, it makes the volume bootable by QEMU; at every boot the guest reads sector 1 (bytes
512-1023), stamps :data:`GUEST_MARKER` at its start, increments the counter byte after it (byte 528) and writes
the sector back through SeaBIOS -> virtio-blk -> QEMU's rbd driver -> Ceph, then halts. So a volume's byte 528 counts
the boots, read from Ceph with librbd (:meth:`RbdWorld.guest_boots`). Bytes from 1 MiB (:data:`DATA_OFFSET`) on are
free for test data.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openstack_world as ow

CEPH_CONF = os.environ.get("OPENCSBS_TEST_CEPH_CONF")
CEPH_USER = os.environ.get("OPENCSBS_TEST_CEPH_USER", "opencsbs")
CEPH_KEYRING = os.environ.get("OPENCSBS_TEST_CEPH_KEYRING")
#: pool for images outside Cinder (libvirt domains' RBD disks, the benchmark)
POOL = os.environ.get("OPENCSBS_TEST_CEPH_POOL", "rbd")
#: Cinder's RBD pool
VOLUMES_POOL = os.environ.get("OPENCSBS_TEST_CEPH_VOLUMES_POOL", "volumes")
OS_RBD = os.environ.get("OPENCSBS_TEST_OS_RBD") == "1"
AZ = os.environ.get("OPENCSBS_TEST_OS_RBD_AZ", "az-kvm")
KVM_HOST = os.environ.get("OPENCSBS_TEST_OS_RBD_HOST", "kvm-host")
VOLUME_TYPE = os.environ.get("OPENCSBS_TEST_OS_RBD_VOLUME_TYPE", "rbd")
#: Cinder backend name of the RBD backend (the ``backend`` of a volume's ``host@backend#pool``)
BACKEND = os.environ.get("OPENCSBS_TEST_OS_RBD_BACKEND", "ceph")
#: the private libvirtd of kvm-host
LIBVIRT_URI = os.environ.get("OPENCSBS_TEST_OS_LIBVIRT_URI")

MIB = 1 << 20
GIB = 1 << 30
#: test data goes from here on (the guest owns sectors 0 and 1)
DATA_OFFSET = MIB
#: what the guest stamps at the start of sector 1 at every boot; the boot counter is the byte after it
GUEST_MARKER = b"CSBS-GUEST-WROTE"
#: tests/data/guest-boot.S assembled (``as --32 -o g.o guest-boot.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary
#: -o g.bin g.o``), zlib + base64
GUEST_BOOT_SECTOR = zlib.decompress(base64.b64decode(
    "eNr7ZXig70bfgb4LexhqfneIOdbsYGTaycRg8G03Q8NZ4X1ONfsZGnYKMHxe8o9NoKELLM+MkP/y+i+Dc7BTsK57qGtwiG54kH+IK8MoGDIgdBUAEeQ"
    "jgA=="))
assert len(GUEST_BOOT_SECTOR) == 512 and GUEST_BOOT_SECTOR[-2:] == b"\x55\xaa"


def missing() -> str | None:
    """Why the RBD stack cannot be used here (None: it can)."""
    if not (CEPH_CONF and Path(CEPH_CONF).exists()):
        return "Ceph not started (scripts/services/ceph.sh start; source $OPENCSBS_WORK/env/ceph.env)"
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        return ("the rados/rbd modules are not importable (python3-rados, python3-rbd; scripts/services/ceph.sh "
                "links them into .venv)")
    if not ow.available():
        return "OpenStack not started (scripts/services/openstack.sh start)"
    if not OS_RBD:
        return "the OpenStack stack runs without Ceph (start scripts/services/ceph.sh before openstack.sh)"
    return None


def rbd_backends_setting() -> dict:
    """``cloud.openstack_rbd_backends`` for this stack: Cinder backend ``ceph`` -> the opencsbs client settings."""
    return {BACKEND: {"conf": CEPH_CONF, "user": CEPH_USER, "keyring": CEPH_KEYRING, "pool": VOLUMES_POOL}}


def connect_cluster():
    """A connected ``rados.Rados`` as ``client.opencsbs`` (read-write on both pools). Close with ``shutdown()``."""
    import rados

    cluster = rados.Rados(conffile=CEPH_CONF, rados_id=CEPH_USER, conf={"keyring": CEPH_KEYRING})
    cluster.connect(timeout=20)
    return cluster


def pattern(length: int, seed: int) -> bytes:
    """``length`` reproducible pseudo-random bytes (``seed`` picks them)."""
    return random.Random(seed).randbytes(length)


class RbdWorld(ow.World):
    """:class:`openstack_world.World` (project ``csbs-demo``) plus Ceph: RBD volumes, their images, guests on kvm-host.

    Volumes are Cinder volumes of type ``rbd`` (sizes in whole GiB, as Cinder has them; images are sparse, so only
    what a test writes is stored and read). ``image(volume)`` opens ``volumes/volume-<id>`` with librbd.
    """

    def __init__(self, tag: str | None = None):
        super().__init__(tag=tag)
        self.cluster = connect_cluster()
        self._ioctx: dict[str, object] = {}
        self.snapshots: list[str] = []

    def ioctx(self, pool: str = VOLUMES_POOL):
        if pool not in self._ioctx:
            self._ioctx[pool] = self.cluster.open_ioctx(pool)
        return self._ioctx[pool]

    # -- volumes and their images ---------------------------------------------------------------------------
    def rbd_volume(self, what: str, size_gib: int = 1, wait: bool = True):
        """A Cinder volume of type ``rbd`` (an image in pool ``volumes``) of ``size_gib`` GiB, ``available``."""
        bs = self.demo.block_storage
        vol = bs.create_volume(size=size_gib, name=self.name(what), volume_type=VOLUME_TYPE)
        self.volumes.append(vol.id)
        if wait:
            vol = bs.wait_for_status(vol, "available", failures=["error"], interval=0.3, wait=120)
        return vol

    @staticmethod
    def image_name(volume) -> str:
        """Cinder RBD's image name of a volume (sdk Volume or id)."""
        return f"volume-{getattr(volume, 'id', volume)}"

    @contextmanager
    def image(self, volume=None, *, name: str | None = None, pool: str = VOLUMES_POOL, snapshot: str | None = None,
              read_only: bool = False):
        """``rbd.Image`` of a volume's image (sdk Volume or volume id), or of image ``name`` in ``pool``;
        at RBD ``snapshot`` (read-only) when given."""
        import rbd

        name = name or self.image_name(volume)
        with rbd.Image(self.ioctx(pool), name, snapshot=snapshot, read_only=read_only or snapshot is not None) as img:
            yield img

    def write(self, volume, offset: int, data: bytes) -> None:
        """Write ``data`` at byte ``offset`` of a volume's image and flush it to the OSDs."""
        with self.image(volume) as img:
            img.write(data, offset)
            img.flush()

    def read(self, volume, offset: int, length: int, snapshot: str | None = None) -> bytes:
        with self.image(volume, snapshot=snapshot) as img:
            return img.read(offset, length)

    def write_pattern(self, volume, length: int, seed: int, offset: int = DATA_OFFSET) -> bytes:
        """Write ``length`` bytes of :func:`pattern` at ``offset`` (default 1 MiB, after the guest's sectors);
        returns them, for comparing after a restore."""
        data = pattern(length, seed)
        with self.image(volume) as img:
            for pos in range(0, length, 4 * MIB):
                img.write(data[pos:pos + 4 * MIB], offset + pos)
            img.flush()
        return data

    def digest(self, volume, snapshot: str | None = None, length: int | None = None) -> str:
        """sha256 hex of a volume image's first ``length`` bytes (default: all of it)."""
        h = hashlib.sha256()
        with self.image(volume, snapshot=snapshot) as img:
            size = img.size() if length is None else length
            for pos in range(0, size, 4 * MIB):
                h.update(img.read(pos, min(4 * MIB, size - pos)))
        return h.hexdigest()

    def rbd_snapshots(self, volume) -> list[str]:
        """Names of the RBD snapshots on a volume's image (Cinder's are ``snapshot-<id>``)."""
        with self.image(volume, read_only=True) as img:
            return [s["name"] for s in img.list_snaps()]

    def cinder_snapshot(self, volume, force: bool = True):
        """A Cinder snapshot of a volume (``force``: also when in-use), ``available``."""
        bs = self.demo.block_storage
        snap = bs.create_snapshot(volume_id=volume.id, name=self.name(f"snap-{len(self.snapshots)}"), force=force)
        self.snapshots.append(snap.id)
        return bs.wait_for_status(snap, "available", failures=["error"], interval=0.3, wait=120)

    # -- guests on kvm-host ---------------------------------------------------------------------------------
    def install_guest(self, volume) -> None:
        """Make a volume bootable: the boot sector at offset 0, a zeroed sector 1 (boot count 0), bootable flag."""
        with self.image(volume) as img:
            img.write(GUEST_BOOT_SECTOR + bytes(512), 0)
            img.flush()
        self.demo.block_storage.set_volume_bootable_status(volume, True)

    def boot_guest(self, what: str, boot, data: list = (), wait: bool = True):
        """A server in AZ az-kvm (libvirt driver) booted from RBD volume ``boot`` (:meth:`install_guest` done
        here), with ``data`` volumes attached; ``networks='none'``. Waits ACTIVE and the first boot's write."""
        self.install_guest(boot)
        bdm = [{"boot_index": 0, "uuid": boot.id, "source_type": "volume", "destination_type": "volume",
                "delete_on_termination": False}]
        bdm += [{"boot_index": -1, "uuid": v.id, "source_type": "volume", "destination_type": "volume",
                 "delete_on_termination": False} for v in data]
        server = self._create(self.demo, what, AZ, block_device_mapping=bdm)
        self.servers.append(server.id)
        if not wait:
            return server
        server = self.wait_active(server)
        self.wait_guest_boots(boot, 1)
        return server

    def guest_boots(self, volume, snapshot: str | None = None) -> int:
        """How often the guest booted from this volume (0 before the first boot). Raises AssertionError when
        sector 1 holds something else than the guest's marker (after a boot)."""
        sector = self.read(volume, 512, 512, snapshot=snapshot)
        if sector[:16] == bytes(16) and sector[16] == 0:
            return 0
        assert sector[:16] == GUEST_MARKER, f"sector 1 of {self.image_name(volume)} is not the guest's: {sector[:32]!r}"
        return sector[16]

    def wait_guest_boots(self, volume, count: int, wait: float = 60) -> int:
        """Wait until the guest's boot counter in Ceph reaches ``count`` (librbd's writeback cache flushes in
        about 1 s). Raises TimeoutError."""
        deadline = time.monotonic() + wait
        got = None
        while time.monotonic() < deadline:
            got = self.guest_boots(volume)
            if got >= count:
                return got
            time.sleep(0.25)
        raise TimeoutError(f"the guest on {self.image_name(volume)} booted {got} times, not {count}")

    def stop(self, server):
        """Stop a server through Nova; returns it SHUTOFF (the stack waits 3 s for an ACPI shutdown)."""
        self.admin.compute.stop_server(server)
        return self.wait_status(server.id, "SHUTOFF", wait=120)

    def start(self, server):
        self.admin.compute.start_server(server)
        return self.wait_status(server.id, "ACTIVE", wait=120)

    def domain_xml(self, server) -> str:
        """libvirt's XML of a server's domain on kvm-host (``virsh dumpxml``)."""
        name = self.admin.compute.get_server(server.id).instance_name
        out = subprocess.run(["virsh", "-c", LIBVIRT_URI, "dumpxml", name], capture_output=True, text=True,
                             timeout=30)
        if out.returncode:
            raise RuntimeError(f"virsh dumpxml {name}: {out.stderr.strip()}")
        return out.stdout

    def domain_state(self, server) -> str:
        name = self.admin.compute.get_server(server.id).instance_name
        return subprocess.run(["virsh", "-c", LIBVIRT_URI, "domstate", name], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    # -- cleanup --------------------------------------------------------------------------------------------
    def remove_rbd_snapshots(self, volume) -> None:
        """Delete every RBD snapshot left on a volume's image (unprotecting it first); a missing image is fine."""
        import rbd

        try:
            with self.image(volume) as img:
                for snap in list(img.list_snaps()):
                    try:
                        if img.is_protected_snap(snap["name"]):
                            img.unprotect_snap(snap["name"])
                        img.remove_snap(snap["name"])
                    except rbd.Error:
                        pass
        except rbd.ImageNotFound:
            pass

    def cleanup(self) -> None:
        """Servers (force-deleted), Cinder snapshots of this world's volumes, RBD snapshots left on their images,
        then the volumes; waits until the images are gone from the pool (up to 60 s)."""
        compute = self.admin.compute
        for sid in self.servers + self.admin_servers:
            try:
                compute.delete_server(compute.get_server(sid), force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for sid in self.servers + self.admin_servers:
            try:
                compute.wait_for_delete(compute.get_server(sid), interval=0.3, wait=120)
            except Exception:  # noqa: BLE001
                pass
        self.servers, self.admin_servers = [], []
        bs = self.admin.block_storage
        mine = set(self.volumes)
        snaps = [s for s in bs.snapshots(details=True, all_projects=True) if s.volume_id in mine or s.id in self.snapshots]
        for s in snaps:
            try:
                bs.delete_snapshot(s, force=True)
            except Exception:  # noqa: BLE001
                pass
        for s in snaps:
            try:
                bs.wait_for_delete(s, interval=0.3, wait=60)
            except Exception:  # noqa: BLE001
                pass
        for vid in self.volumes:
            self.remove_rbd_snapshots(vid)
        super().cleanup()
        import rbd

        deadline = time.monotonic() + 60
        names = {self.image_name(v) for v in self.volumes}
        while time.monotonic() < deadline and names & set(rbd.RBD().list(self.ioctx())):
            time.sleep(0.5)
        self.volumes, self.snapshots = [], []

    def close(self) -> None:
        for io in self._ioctx.values():
            io.close()
        self._ioctx = {}
        self.cluster.shutdown()


def session_world() -> Iterator[RbdWorld]:
    """Body of the session fixture ``rbd_world`` (tests/conftest.py): skip/fail when the stack is missing, yield
    one :class:`RbdWorld`, clean it up at the end of the session."""
    from conftest import require_component

    reason = missing()
    require_component(reason is None, reason or "")
    world = RbdWorld()
    try:
        yield world
    finally:
        try:
            world.cleanup()
        finally:
            world.close()
