"""Backups and restores of real libvirt domains (QEMU/TCG, no guest OS) through opencsbs's HTTP API: a running
domain (pull-mode backup with checkpoints, incremental from dirty bitmaps), a shut-off one (disk images read
directly), restores byte-exact with power_on honoured, and an unreachable libvirtd.

Needs ``scripts/services/libvirt.sh start`` (env ``OPENCSBS_TEST_LIBVIRT_URI``, ``OPENCSBS_TEST_LIBVIRT_DIR``).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import require_component
from libvirt_helpers import DISK_DIR, URI, libvirt_available
from engine_helpers import PROVIDER, item_of, protect, restore, run_jobs

pytestmark = pytest.mark.libvirt

MIB = 1024 * 1024


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def _random_file(path: Path, n: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(n))
    return path


class Disk:
    def __init__(self, path: Path, fmt: str, target: str):
        self.path, self.fmt, self.target = path, fmt, target

    def write_offline(self, offset: int, n: int, seed: int) -> None:
        """Write ``n`` random bytes at ``offset`` into the image (domain shut off)."""
        src = _random_file(self.path.with_suffix(".src"), n, seed)
        _run("qemu-io", "-f", self.fmt, "-c", f"write -s {src} {offset} {n}", str(self.path))
        src.unlink()

    def digest(self) -> str:
        """SHA-256 of the guest-visible bytes (``qemu-img convert -O raw``; ``-U``: also while QEMU holds it)."""
        out = self.path.with_suffix(".digest.raw")
        try:
            _run("qemu-img", "convert", "-U", "-f", self.fmt, "-O", "raw", str(self.path), str(out))
            h = hashlib.sha256()
            with open(out, "rb") as fh:
                for block in iter(lambda: fh.read(4 * MIB), b""):
                    h.update(block)
            return h.hexdigest()
        finally:
            out.unlink(missing_ok=True)


def _domain_xml(name: str, disks: list[Disk]) -> str:
    devs = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{d.fmt}'/><source file='{d.path}'/>"
        f"<target dev='{d.target}' bus='virtio'/></disk>"
        for d in disks
    )
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{devs}<memballoon model='none'/>"
        "</devices></domain>"
    )


class World:
    """Test domains and their disks; removed at teardown."""

    def __init__(self, conn, tag: str):
        self.conn, self.tag = conn, tag
        self.domains = []

    def disk(self, name: str, fmt: str, target: str, size: str) -> Disk:
        path = DISK_DIR / f"{self.tag}-{name}.{fmt}"
        _run("qemu-img", "create", "-q", "-f", fmt, str(path), size)
        return Disk(path, fmt, target)

    def define(self, kind: str, disks: list[Disk]):
        dom = self.conn.defineXML(_domain_xml(f"opencsbs-bk-{self.tag}-{kind}", disks))
        self.domains.append(dom)
        return dom


def write_live(dom, disk: Disk, offset: int, n: int, seed: int) -> None:
    """Write ``n`` random bytes at ``offset`` into a running domain's disk, as a guest would (QEMU's HMP
    ``qemu-io`` on the virtio device's backend), then flush QEMU's metadata to the image file."""
    import libvirt_qemu

    root = ET.fromstring(dom.XMLDesc(0))
    alias = next(d.find("alias").get("name") for d in root.findall("./devices/disk")
                 if d.find("target").get("dev") == disk.target)
    src = _random_file(disk.path.with_suffix(f".{seed}.src"), n, seed)
    try:
        for cmd in (f"write -s {src} {offset} {n}", "flush"):
            out = libvirt_qemu.qemuMonitorCommand(
                dom, f'qemu-io -d /machine/peripheral/{alias}/virtio-backend "{cmd}"',
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            assert "error" not in out.lower() and "fail" not in out.lower(), out
    finally:
        src.unlink()


@pytest.fixture
def world():
    ok, why = libvirt_available()
    require_component(ok, why)
    import libvirt

    conn = libvirt.open(URI)
    DISK_DIR.mkdir(parents=True, exist_ok=True)
    w = World(conn, uuid.uuid4().hex[:6])
    yield w
    for dom in w.domains:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass
    for f in DISK_DIR.glob(f"{w.tag}-*"):
        f.unlink()
    conn.close()


@pytest.fixture
def settings(settings, tmp_path):
    settings.cloud.driver = "libvirt"
    settings.cloud.libvirt_uri = URI or "qemu:///system"
    settings.cloud.libvirt_az = "kvm-az1"
    settings.cloud.libvirt_project_id = "demo"
    settings.cloud.libvirt_scratch_dir = tmp_path / "scratch"
    return settings


@pytest.fixture
def headers(make_token):
    return {"X-Auth-Token": make_token("demo", "member")}


def _backup(client, headers, runtime, server_id: str, **param) -> dict:
    r = protect(client, headers, server_id, **param)
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]
    assert run_jobs(runtime) == 1
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "available", item["extend_info"]["fail_reason"]
    return item


def _restore(client, headers, runtime, item: dict, server_id: str, power_on: bool) -> None:
    r = restore(client, headers, item, server_id, power_on=power_on)
    assert r.status_code == 200, r.text
    rid = r.json()["restore"]["id"]
    assert run_jobs(runtime) == 1
    r = client.get(f"/v1/demo/restores/{rid}", headers=headers)
    assert r.json()["restore"]["status"] == "success", r.json()


def _read_bytes(runtime, item: dict) -> dict[str, int]:
    """Bytes the engine read from each disk snapshot (by source volume id)."""
    from opencsbs.db.models import VolumeBackup

    with runtime.sessions() as session:
        return {session.get(VolumeBackup, vb["id"]).source_volume_id: session.get(VolumeBackup, vb["id"]).read_bytes
                for vb in item["extend_info"]["volume_backups"]}


def test_running_domain_backup_and_restore_are_byte_exact(world, client, headers, runtime):
    qcow = world.disk("run-a", "qcow2", "vda", "48M")
    raw = world.disk("run-b", "raw", "vdb", "32M")
    qcow.write_offline(0, 3 * MIB, 1)
    qcow.write_offline(20 * MIB, 2 * MIB + 4096, 2)
    raw.write_offline(5 * MIB, 3 * MIB, 3)
    dom = world.define("running", [qcow, raw])
    dom.create()
    at_backup = {d.target: d.digest() for d in (qcow, raw)}

    item = _backup(client, headers, runtime, dom.UUIDString())
    ext = item["extend_info"]
    vbs = {v["source_volume_id"]: v for v in ext["volume_backups"]}
    assert set(vbs) == {str(qcow.path), str(raw.path)}
    assert all(v["status"] == "available" for v in vbs.values())
    assert vbs[str(qcow.path)]["bootable"] is True and vbs[str(raw.path)]["bootable"] is False
    assert vbs[str(qcow.path)]["snapshot_id"].endswith(":vda")
    # stored sizes (MB) follow the data written: 5 MiB on vda, 3 MiB on vdb, random so not compressible
    assert vbs[str(qcow.path)]["size"] >= 5 and vbs[str(raw.path)]["size"] >= 3
    assert ext["size"] >= 8 and ext["incremental"] is False
    assert list(runtime.settings.cloud.libvirt_scratch_dir.iterdir()) == []  # snapshot copies dropped
    assert [c.getName() for c in dom.listAllCheckpoints()] != []  # kept for the next incremental

    # the guest changes both disks; the restore brings back the backup point, byte for byte
    write_live(dom, qcow, MIB, 2 * MIB, 4)
    write_live(dom, raw, 0, MIB, 5)
    assert qcow.digest() != at_backup["vda"] and raw.digest() != at_backup["vdb"]
    _restore(client, headers, runtime, item, dom.UUIDString(), power_on=False)
    assert not dom.isActive()  # powered off for the restore, left off (power_on false)
    assert {d.target: d.digest() for d in (qcow, raw)} == at_backup
    assert dom.listAllCheckpoints() == []  # bitmaps did not see the restore: no incremental may rest on them


def test_incremental_backup_reads_only_changed_ranges_and_restores_exactly(world, client, headers, runtime):
    qcow = world.disk("inc-a", "qcow2", "vda", "64M")
    raw = world.disk("inc-b", "raw", "vdb", "16M")
    qcow.write_offline(0, 24 * MIB, 11)
    raw.write_offline(MIB, MIB, 12)
    dom = world.define("incremental", [qcow, raw])
    dom.create()
    sid = dom.UUIDString()

    full = _backup(client, headers, runtime, sid)
    full_read = _read_bytes(runtime, full)
    assert full_read[str(qcow.path)] >= 24 * MIB

    write_live(dom, qcow, 40 * MIB, 3 * MIB, 13)  # 3 MiB changed on vda after the full backup
    write_live(dom, qcow, 2 * MIB, 64 * 1024, 14)
    at_incremental = {d.target: d.digest() for d in (qcow, raw)}
    inc = _backup(client, headers, runtime, sid, incremental=True)
    ext = inc["extend_info"]
    assert ext["incremental"] is True
    vbs = {v["source_volume_id"]: v for v in ext["volume_backups"]}
    assert vbs[str(qcow.path)]["incremental"] is True
    read = _read_bytes(runtime, inc)
    cs = runtime.bank.chunk_size
    # exactly the dirty extents were read: the 64 KiB at 2 MiB as a piece; the chunk at 40 MiB is more than half
    # rewritten (3 of its 4 MiB), so it is read and stored whole (docs/bank.md, "Pieces")
    touched = {c for off, n in ((40 * MIB, 3 * MIB), (2 * MIB, 64 * 1024))
               for c in range(off // cs, (off + n - 1) // cs + 1)}
    assert read[str(qcow.path)] == cs + 64 * 1024
    assert vbs[str(qcow.path)]["size"] <= len(touched) * cs // MIB  # MB stored: the changed chunks only
    assert vbs[str(raw.path)]["size"] == 0  # raw disk: read whole (no bitmap), nothing new stored

    # the guest writes more; restoring the incremental brings back its point in time (full + changes)
    write_live(dom, qcow, 0, 8 * MIB, 15)
    write_live(dom, raw, 0, 4 * MIB, 16)
    _restore(client, headers, runtime, inc, sid, power_on=True)
    assert dom.isActive()  # was running, restore asked for power_on
    assert {d.target: d.digest() for d in (qcow, raw)} == at_incremental
    # and the full backup still restores its own point
    _restore(client, headers, runtime, full, sid, power_on=False)
    assert not dom.isActive()
    assert qcow.digest() != at_incremental["vda"]
    dom.create()

    # the restore dropped the checkpoints: the next incremental reads the disk whole, never a wrong delta
    again = _backup(client, headers, runtime, sid, incremental=True)
    assert _read_bytes(runtime, again)[str(qcow.path)] >= 24 * MIB
    write_live(dom, qcow, 0, MIB, 17)
    _restore(client, headers, runtime, again, sid, power_on=False)
    _restore(client, headers, runtime, full, sid, power_on=False)
    back = _backup(client, headers, runtime, sid)
    assert back["extend_info"]["volume_backups"][0]["size"] == 0  # same bytes as the full backup: all deduplicated


def test_shut_off_domain_backup_and_restore_with_power_on(world, client, headers, runtime):
    qcow = world.disk("off-a", "qcow2", "vda", "32M")
    raw = world.disk("off-b", "raw", "vdb", "16M")
    qcow.write_offline(MIB, 4 * MIB, 21)
    raw.write_offline(0, 2 * MIB, 22)
    dom = world.define("shutoff", [qcow, raw])
    sid = dom.UUIDString()
    at_backup = {d.target: d.digest() for d in (qcow, raw)}

    item = _backup(client, headers, runtime, sid)
    assert not dom.isActive()  # a backup does not start the domain
    vbs = {v["source_volume_id"]: v for v in item["extend_info"]["volume_backups"]}
    assert vbs[str(qcow.path)]["size"] >= 4 and vbs[str(raw.path)]["size"] >= 2

    qcow.write_offline(0, 6 * MIB, 23)
    raw.write_offline(MIB, 3 * MIB, 24)
    _restore(client, headers, runtime, item, sid, power_on=True)
    assert dom.isActive()  # power_on honoured even though the domain was off
    assert {d.target: d.digest() for d in (qcow, raw)} == at_backup

    write_live(dom, qcow, 0, MIB, 25)
    _restore(client, headers, runtime, item, sid, power_on=False)
    assert not dom.isActive()
    assert {d.target: d.digest() for d in (qcow, raw)} == at_backup


def test_libvirtd_unreachable(world, client, headers, runtime, settings, tmp_path):
    from fastapi.testclient import TestClient

    from opencsbs.api.app import create_app
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction
    from opencsbs.bootstrap import build_runtime

    disk = world.disk("gone-a", "qcow2", "vda", "16M")
    dom = world.define("gone", [disk])
    sid = dom.UUIDString()
    item = _backup(client, headers, runtime, sid)

    bad = f"qemu:///system?socket={tmp_path}/no-such.sock"
    # a backup asked of an unreachable libvirtd: 503 at once, nothing created
    settings.cloud.libvirt_uri = bad
    rt = build_runtime(settings, migrate=False)
    try:
        with transaction(rt.sessions) as session:
            token = create_token(session, "demo", "member")
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            r = protect(c, {"X-Auth-Token": token}, sid)
            assert r.status_code == 503, r.text
            assert r.json()["error_code"] == "CSBS.9999" and "libvirt" in r.json()["error_msg"]
    finally:
        rt.close()

    # libvirtd goes away after the request was accepted: the job ends in a clean error, never a 500
    r = protect(client, headers, sid)
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]
    runtime.driver.close()
    runtime.driver.uri = bad
    runtime.settings.engine.max_attempts = 1  # a transient failure is retried; here the first one is the last
    assert run_jobs(runtime) == 1
    failed = item_of(client, headers, cp["id"])
    assert failed["status"] == "error"
    assert failed["extend_info"]["fail_code"]["Code"] == 9999
    assert "libvirt" in failed["extend_info"]["fail_reason"]
    assert list(runtime.settings.cloud.libvirt_scratch_dir.glob("*")) == []
    # a restore asked meanwhile: 503, and the backup stays available
    r = restore(client, headers, item, sid, power_on=False)
    assert r.status_code == 503 and r.json()["error_code"] == "CSBS.9999", r.text
    assert item_of(client, headers, item["checkpoint_id"])["status"] == "available"


def test_a_retried_snapshot_replaces_a_partial_one_and_a_lost_base_reads_whole(world, runtime):
    """The engine names a snapshot after its job and may ask again after a crash: a complete snapshot is found,
    a partial one (backup job still running, checkpoint made, copies half done) is replaced without leaking."""
    from opencsbs.clouds.base import CloudContext

    qcow = world.disk("retry-a", "qcow2", "vda", "16M")
    qcow.write_offline(0, 2 * MIB, 31)
    dom = world.define("retry", [qcow])
    dom.create()
    driver, ctx, sid = runtime.driver, CloudContext(project_id="demo"), dom.UUIDString()
    vid = str(qcow.path)

    first = driver.snapshot_server(ctx, sid, "csbs-job-1")
    assert driver.snapshot_server(ctx, sid, "csbs-job-1") == first  # found, not taken again
    assert [c.getName() for c in dom.listAllCheckpoints()] == ["csbs-job-1"]
    driver.delete_snapshot(first)
    driver.delete_snapshot(first)  # idempotent
    assert not (driver.scratch_dir / "csbs-job-1").exists()

    # an interrupted attempt of job 2: its pull job still runs and its checkpoint exists
    folder = driver.scratch_dir / "csbs-job-2"
    folder.mkdir(parents=True)
    (folder / "vda.raw").write_bytes(b"half")
    from opencsbs.clouds.libvirt import qemu

    dom.backupBegin(qemu.pull_backup_xml(driver._nbd_socket(folder), [("vda", str(folder / "f.qcow2"), None)]),
                    qemu.checkpoint_xml("csbs-job-2", [("vda", True)], "opencsbs"), 0)
    write_live(dom, qcow, 4 * MIB, MIB, 32)
    snap = driver.snapshot_server(ctx, sid, "csbs-job-2", since={vid: "csbs-job-1"})
    vs = snap.volume(vid)
    assert vs.since == "csbs-job-1" and vs.change_token == "csbs-job-2"
    assert driver.changed_ranges(vs) == [(4 * MIB, MIB)]
    reader = driver.open_snapshot(vs)
    try:
        assert reader.read(4 * MIB, MIB) == random.Random(32).randbytes(MIB)
        assert reader.read(0, 2 * MIB) == random.Random(31).randbytes(2 * MIB)
    finally:
        reader.close()
    import libvirt

    try:
        left = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        left = None
    assert left is None, (left, dom.jobInfo())  # no backup job left running
    # the checkpoint used as base is kept, older ones are pruned
    assert sorted(c.getName() for c in dom.listAllCheckpoints()) == ["csbs-job-1", "csbs-job-2"]
    driver.delete_snapshot(snap)

    # a base checkpoint that no longer exists: the disk is read whole (no changed ranges), never a wrong delta
    snap3 = driver.snapshot_server(ctx, sid, "csbs-job-3", since={vid: "csbs-gone"})
    assert snap3.volume(vid).since is None and driver.changed_ranges(snap3.volume(vid)) is None
    assert sorted(c.getName() for c in dom.listAllCheckpoints()) == ["csbs-job-3"]
    driver.delete_snapshot(snap3)
    assert list(driver.scratch_dir.iterdir()) == []


def test_housekeeping_deletes_checkpoints_no_kept_backup_needs(world, client, headers, runtime):
    from opencsbs.engine.housekeeping import housekeep

    qcow = world.disk("hk-a", "qcow2", "vda", "16M")
    qcow.write_offline(0, MIB, 41)
    dom = world.define("housekeeping", [qcow])
    dom.create()
    sid = dom.UUIDString()
    item = _backup(client, headers, runtime, sid)
    names = [c.getName() for c in dom.listAllCheckpoints()]
    assert len(names) == 1
    runtime.driver.checkpoint_grace_seconds = 0
    housekeep(runtime)
    assert [c.getName() for c in dom.listAllCheckpoints()] == names  # the kept backup's checkpoint stays

    r = client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}", headers=headers)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    assert housekeep(runtime).change_logs == 1
    assert dom.listAllCheckpoints() == []  # no backup left to be the base of an incremental: bitmap dropped
