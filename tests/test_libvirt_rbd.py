"""The libvirt driver on a KVM host whose domains use Ceph RBD network disks (``<disk type='network'><source
protocol='rbd'>``), without OpenStack: a running domain with two RBD disks backed up (one instant: suspended while
both are snapshotted), changed through librbd, backed up incrementally (only the changed chunks read), restored
while shut off, byte for byte; only the snapshot the next incremental needs is left on each image.

Needs ``scripts/services/libvirt.sh start`` and ``scripts/services/ceph.sh start`` (QEMU's rbd block driver comes
with qemu-block-extra).
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from pathlib import Path

import pytest

from conftest import require_component
from engine_helpers import item_of, protect, restore, run_jobs
from libvirt_helpers import URI, libvirt_available
from opencsbs.config import RbdSettings

import rbd_world as rw

pytestmark = [pytest.mark.libvirt, pytest.mark.ceph]

MIB = 1 << 20
SIZE = 32 * MIB


def _mon_v1() -> tuple[str, str]:
    text = Path(rw.CEPH_CONF).read_text()
    m = re.search(r"v1:([0-9.]+):(\d+)", text)
    assert m, "no v1 monitor address in ceph.conf"
    return m.group(1), m.group(2)


def _key() -> str:
    m = re.search(r"key\s*=\s*(\S+)", Path(rw.CEPH_KEYRING).read_text())
    assert m, "no key in the keyring"
    return m.group(1)


class RbdDomain:
    """Two images in the test pool and a domain using them as RBD network disks, with its cephx secret."""

    def __init__(self, conn, cluster):
        import base64

        from opencsbs.clouds.rbd import bindings

        _rados, rbd = bindings()
        self.conn, self.cluster = conn, cluster
        tag = uuid.uuid4().hex[:6]
        self.images = [f"opencsbs-lv-{tag}-a", f"opencsbs-lv-{tag}-b"]
        feats = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
                 | rbd.RBD_FEATURE_FAST_DIFF)
        for image in self.images:
            rbd.RBD().create(cluster.ioctx(rw.POOL), image, SIZE, old_format=False, features=feats)
        secret_uuid = str(uuid.uuid4())
        self.secret = conn.secretDefineXML(
            f"<secret ephemeral='no' private='no'><uuid>{secret_uuid}</uuid><usage type='ceph'>"
            f"<name>client.{rw.CEPH_USER} {tag}</name></usage></secret>")
        self.secret.setValue(base64.b64decode(_key()))
        host, port = _mon_v1()
        disks = "".join(
            f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='writeback'/>"
            f"<auth username='{rw.CEPH_USER}'><secret type='ceph' uuid='{secret_uuid}'/></auth>"
            f"<source protocol='rbd' name='{rw.POOL}/{image}'><host name='{host}' port='{port}'/></source>"
            f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>"
            for i, image in enumerate(self.images))
        self.dom = conn.defineXML(
            f"<domain type='qemu'><name>opencsbs-lv-rbd-{tag}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
            f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{disks}<memballoon model='none'/>"
            "</devices></domain>")

    def write(self, image: str, offset: int, data: bytes) -> None:
        with self.cluster.image(rw.POOL, image) as img:
            img.write(data, offset)
            img.flush()

    def digest(self, image: str) -> str:
        h = hashlib.sha256()
        with self.cluster.image(rw.POOL, image, read_only=True) as img:
            for off in range(0, SIZE, 4 * MIB):
                h.update(img.read(off, 4 * MIB))
        return h.hexdigest()

    def own_snapshots(self, image: str) -> list[str]:
        from opencsbs.clouds.rbd import is_opencsbs_snapshot

        return [s.name for s in self.cluster.list_snapshots(rw.POOL, image) if is_opencsbs_snapshot(s.name)]

    def remove(self) -> None:
        import libvirt

        from opencsbs.clouds.rbd import bindings

        _rados, rbd = bindings()
        try:
            if self.dom.isActive():
                self.dom.destroy()
            self.dom.undefine()
        except libvirt.libvirtError:
            pass
        try:
            self.secret.undefine()
        except libvirt.libvirtError:
            pass
        for image in self.images:
            for s in self.cluster.list_snapshots(rw.POOL, image, missing_ok=True):
                self.cluster.remove_snapshot(rw.POOL, image, s.name)
            try:
                rbd.RBD().remove(self.cluster.ioctx(rw.POOL), image)
            except rbd.ImageNotFound:
                pass


@pytest.fixture
def rbd_domain():
    ok, why = libvirt_available()
    require_component(ok, why)
    require_component(bool(rw.CEPH_CONF) and Path(rw.CEPH_CONF or "").exists(),
                      "Ceph not started (scripts/services/ceph.sh start)")
    import libvirt

    from opencsbs.clouds.rbd import Cluster

    cluster = Cluster(rw.CEPH_CONF, rw.CEPH_USER, rw.CEPH_KEYRING)
    conn = libvirt.open(URI)
    d = RbdDomain(conn, cluster)
    yield d
    d.remove()
    conn.close()
    cluster.close()


@pytest.fixture
def settings(settings, tmp_path):
    settings.cloud.driver = "libvirt"
    settings.cloud.libvirt_uri = URI or "qemu:///system"
    settings.cloud.libvirt_project_id = "demo"
    settings.cloud.libvirt_scratch_dir = tmp_path / "scratch"
    settings.cloud.libvirt_rbd = RbdSettings(conf=rw.CEPH_CONF, user=rw.CEPH_USER, keyring=rw.CEPH_KEYRING,
                                             pool=rw.POOL)
    return settings


def _read_bytes(runtime, item: dict) -> dict[str, int]:
    from opencsbs.db.models import VolumeBackup

    with runtime.sessions() as session:
        return {session.get(VolumeBackup, vb["id"]).source_volume_id: session.get(VolumeBackup, vb["id"]).read_bytes
                for vb in item["extend_info"]["volume_backups"]}


def test_running_domain_on_rbd_backed_up_incrementally_and_restored(rbd_domain, client, make_token, runtime):
    d = rbd_domain
    headers = {"X-Auth-Token": make_token("demo", "member")}
    a, b = d.images
    d.write(a, 0, random.Random(1).randbytes(6 * MIB))
    d.write(b, 12 * MIB, random.Random(2).randbytes(3 * MIB))
    d.dom.create()
    first = {a: d.digest(a), b: d.digest(b)}
    vid = {a: f"{rw.POOL}/{a}", b: f"{rw.POOL}/{b}"}  # volume id = the network source name

    r = protect(client, headers, d.dom.UUIDString())
    assert r.status_code == 200, r.text
    assert run_jobs(runtime) == 1
    item1 = item_of(client, headers, r.json()["checkpoint"]["id"])
    assert item1["status"] == "available", item1["extend_info"]
    read1 = _read_bytes(runtime, item1)
    assert read1 == {vid[a]: 8 * MIB, vid[b]: 4 * MIB}  # allocated chunks only
    assert d.dom.isActive() and d.dom.state()[0] == 1  # resumed: running
    snap1 = d.own_snapshots(a)
    assert len(snap1) == 1 and d.own_snapshots(b) == snap1

    rng = random.Random(3)
    for _ in range(6):  # small writes into chunk 4 of disk b, while the domain runs
        d.write(b, 16 * MIB + rng.randrange(0, 4 * MIB - 4096), rng.randbytes(4096))
    second_b = d.digest(b)
    r = protect(client, headers, d.dom.UUIDString(), incremental=True)
    assert run_jobs(runtime) == 1
    item2 = item_of(client, headers, r.json()["checkpoint"]["id"])
    assert item2["status"] == "available", item2["extend_info"]
    assert _read_bytes(runtime, item2) == {vid[a]: 0, vid[b]: 4 * MIB}
    snap2 = d.own_snapshots(a)
    assert snap2 != snap1 and len(snap2) == 1 and d.own_snapshots(b) == snap2

    d.write(a, 0, b"\xee" * MIB)  # damage, then restore the first backup (the domain is stopped for it)
    r = restore(client, headers, item1, d.dom.UUIDString(), power_on=False)
    assert r.status_code == 200, r.text
    assert run_jobs(runtime) == 1
    rs = client.get(f"/v1/demo/restores/{r.json()['restore']['id']}", headers=headers).json()["restore"]
    assert rs["status"] == "success", rs
    assert not d.dom.isActive()
    assert {a: d.digest(a), b: d.digest(b)} == first
    r = restore(client, headers, item2, d.dom.UUIDString(), power_on=True)
    assert r.status_code == 200, r.text
    assert run_jobs(runtime) == 1
    assert d.digest(b) == second_b and d.dom.isActive()
