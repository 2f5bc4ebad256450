"""OpenStack servers on Ceph RBD backed up for real: a server booted from Cinder RBD volumes runs under
libvirt/QEMU (AZ az-kvm of the test stack), its volumes hold data written through librbd (and the guest's own
boot-sector write); a tenant protects it through opencsbs's HTTP API with the real client (huaweicloud-sdk-python),
changes about 1 % of a volume in small scattered writes, backs up incrementally (reading only the chunks that hold
the changed extents), restores both backups onto the server and compares every byte. Also: workers SIGKILLed in the
snapshot and copy steps (resumed, no RBD snapshot leaked, no server left paused), another project's server and
volume refused by the data side whatever ids are sent, a volume on a Cinder backend that is not RBD refused with the
backend named (CSBS.6061).

Needs ``scripts/services/ceph.sh start`` then ``scripts/services/openstack.sh start`` (tests/rbd_world.py) and the
SDK venv (``scripts/services/sdk.sh start``).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from sqlalchemy import select

import rbd_world as rw
from opencsbs.bank.layout import EXTENT_ALIGN
from opencsbs.clouds.base import CloudContext
from opencsbs.clouds.openstack.datapath import PAUSE_MARK
from opencsbs.clouds.rbd import is_opencsbs_snapshot, rbd_snapshot_name
from opencsbs.config import RbdSettings
from opencsbs.core.errors import CSBSError
from opencsbs.db.models import CheckpointItem, Job, ResourceLock, VolumeBackup

from engine_helpers import PROVIDER, mapping_for, run_jobs

pytestmark = [pytest.mark.ceph, pytest.mark.openstack, pytest.mark.slow]

MIB = rw.MIB
CHUNK = 4 * MIB
#: bytes of test data in the data volume (64 bank chunks), from rw.DATA_OFFSET on
DATA_BYTES = 256 * MIB

PROTECT = """
import json, os
from openstack import connection
from openstack.csbs.v1 import resource as csbs_resource

conn = connection.Connection(auth_token=os.environ["TOKEN"], auth_url="http://127.0.0.1:9/v3")
protect = {"backup_name": os.environ["NAME"], "incremental": os.environ["INCREMENTAL"] == "1"}
backup = csbs_resource.ResourceBackup.new(provider_id=os.environ["PROVIDER"], resource_id=os.environ["SERVER"],
                                          protect=protect)
cp = backup.create(conn.session, prepend_key=False)
print(json.dumps({"checkpoint": cp.id, "status": cp.status}))
"""

ITEM = """
import json, os
from openstack import connection

conn = connection.Connection(auth_token=os.environ["TOKEN"], auth_url="http://127.0.0.1:9/v3")
item = conn.csbs.get_checkpoint_item(os.environ["CHECKPOINT"])
print(json.dumps({"id": item.id, "status": item.status, "extend_info": item.extend_info}))
"""


@pytest.fixture
def settings(settings, rbd_world):
    settings.cloud.driver = "openstack"
    settings.cloud.openstack_cloud = "opencsbs-service"
    settings.cloud.openstack_clouds_yaml = rw.ow.CLOUDS_YAML
    settings.cloud.openstack_timeout = 30
    settings.cloud.openstack_rbd_backends = {k: RbdSettings(**v) for k, v in rw.rbd_backends_setting().items()}
    settings.cloud.openstack_pause_timeout = 60
    settings.cloud.openstack_power_timeout = 180
    settings.engine.progress_seconds = 0.2
    return settings


def _config_file(runtime, path, **engine) -> str:
    """The runtime's settings as a YAML file for ``opencsbs --config ... worker``."""
    data = runtime.settings.model_dump(mode="json", include={"data_dir", "database_url", "cloud", "bank"})
    data.update(workers=0, scheduler=False,
                engine={"lease_seconds": 3.0, "poll_seconds": 0.1, "max_attempts": 6, "progress_seconds": 0.1,
                        **engine})
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _opencsbs_snapshots(world, volume) -> list[str]:
    return [s for s in world.rbd_snapshots(volume) if is_opencsbs_snapshot(s)]


def _job(runtime, item_id: str) -> Job:
    with runtime.sessions() as session:
        return session.scalars(select(Job).where(Job.kind == "backup", Job.target_id == item_id)).one()


def _volume_backups(runtime, item_id: str) -> dict[str, VolumeBackup]:
    with runtime.sessions() as session:
        vbs = session.scalars(select(VolumeBackup).where(VolumeBackup.checkpoint_item_id == item_id)).all()
        return {vb.source_volume_id: vb for vb in vbs}


class Api:
    """opencsbs's HTTP API over a real socket, as one project's member."""

    def __init__(self, base: str, project: str, token: str):
        self.http = httpx.Client(base_url=f"{base}/v1/{project}", headers={"X-Auth-Token": token}, timeout=60)

    def item(self, checkpoint_id: str) -> dict:
        r = self.http.get("/checkpoint_items", params={"checkpoint_id": checkpoint_id})
        assert r.status_code == 200, r.text
        return r.json()["checkpoint_items"][0]

    def check(self, server_id: str) -> dict:
        r = self.http.post(f"/providers/{PROVIDER}/resources/action", json={"check_protectable": [
            {"resource_id": server_id, "resource_type": "OS::Nova::Server"}]})
        assert r.status_code == 200, r.text
        return r.json()["protectable"][0]

    def restore(self, item: dict, server_id: str, power_on: bool) -> dict:
        body = {"restore": {"provider_id": PROVIDER, "checkpoint_id": item["checkpoint_id"],
                            "parameters": {"checkpoint_item_id": item["id"], "power_on": power_on,
                                           "targets": {"server_id": server_id, "volumes": mapping_for(item)}}}}
        r = self.http.post("/restores", json=body)
        assert r.status_code == 200, r.text
        return r.json()["restore"]

    def restore_status(self, restore_id: str) -> dict:
        r = self.http.get(f"/restores/{restore_id}")
        assert r.status_code == 200, r.text
        return r.json()["restore"]


def _sdk_protect(sdk_run, live_server, project, token, server_id, name, incremental) -> str:
    out = sdk_run(PROTECT, TOKEN=token, PROVIDER=PROVIDER, SERVER=server_id, NAME=name,
                  INCREMENTAL="1" if incremental else "0",
                  OS_DATA_PROTECT_ENDPOINT_OVERRIDE=f"{live_server}/v1/{project}").json
    assert out["status"] == "protecting", out
    return out["checkpoint"]


def test_backup_incremental_and_restore_of_a_running_server(rbd_world, runtime, live_server, make_token, sdk_run):
    w = rbd_world
    token = make_token(w.project_id, "member")
    api = Api(live_server, w.project_id, token)
    boot, data = w.rbd_volume("main-boot"), w.rbd_volume("main-data")
    half = DATA_BYTES // 2  # random.randbytes takes at most 256 MiB - 1
    first_data = w.write_pattern(data, half, seed=1) + w.write_pattern(data, half, seed=11,
                                                                        offset=rw.DATA_OFFSET + half)
    w.write_pattern(boot, 8 * MIB, seed=2)
    server = w.boot_guest("main", boot, data=[data])
    assert w.guest_boots(boot) == 1
    assert api.check(server.id) == {"resource_id": server.id, "resource_type": "OS::Nova::Server", "result": True}
    expected1 = {boot.id: w.digest(boot), data.id: w.digest(data)}

    # full backup: the real client protects, a worker copies straight from Ceph
    cp1 = _sdk_protect(sdk_run, live_server, w.project_id, token, server.id, "rbd-full", False)
    started = time.monotonic()
    run_jobs(runtime)
    full_seconds = time.monotonic() - started
    item1 = sdk_run(ITEM, TOKEN=token, CHECKPOINT=cp1,
                    OS_DATA_PROTECT_ENDPOINT_OVERRIDE=f"{live_server}/v1/{w.project_id}").json
    assert item1["status"] == "available", item1
    item1 = api.item(cp1)
    job1 = _job(runtime, item1["id"])
    pause = job1.state["snapshot"]["handle"]["pause_seconds"]
    assert 0 < pause < 60  # two running volumes: paused through Nova while both were snapshotted
    vbs1 = _volume_backups(runtime, item1["id"])
    assert vbs1[data.id].read_bytes == 65 * CHUNK  # the allocated chunks only (256 MiB of data from 1 MiB on)
    assert vbs1[boot.id].read_bytes == 12 * MIB  # boot sector + 8 MiB from 1 MiB: 3 chunks
    snap1 = rbd_snapshot_name(f"csbs-{job1.id}")
    assert {v.change_token for v in vbs1.values()} == {snap1}
    assert _opencsbs_snapshots(w, boot) == _opencsbs_snapshots(w, data) == [snap1]
    assert w.domain_state(server) == "running"  # unpaused
    assert PAUSE_MARK not in (w.admin.compute.get_server(server.id).metadata or {})

    # about 1 % of the data volume rewritten in 40 small writes scattered over 8 of its 64 chunks
    rng = random.Random(3)
    touched = sorted(rng.sample(range(1, 64), 8))
    second_data = bytearray(first_data)
    extents = set()  # the 64 KiB extents of the volume the writes touch (the bank's piece granularity)
    for chunk in touched:
        for _ in range(5):
            at = chunk * CHUNK + rng.randrange(0, CHUNK - 65536) - rw.DATA_OFFSET
            blob = rng.randbytes(65536)
            second_data[at:at + len(blob)] = blob
            w.write(data, rw.DATA_OFFSET + at, blob)
            start = rw.DATA_OFFSET + at
            extents.update(range(start // EXTENT_ALIGN, (start + len(blob) - 1) // EXTENT_ALIGN + 1))
    expected2 = {boot.id: w.digest(boot), data.id: w.digest(data)}
    assert expected2[data.id] != expected1[data.id] and expected2[boot.id] == expected1[boot.id]

    cp2 = _sdk_protect(sdk_run, live_server, w.project_id, token, server.id, "rbd-incremental", True)
    started = time.monotonic()
    run_jobs(runtime)
    incremental_seconds = time.monotonic() - started
    item2 = api.item(cp2)
    assert item2["status"] == "available", item2
    vbs2 = _volume_backups(runtime, item2["id"])
    assert all(vb.incremental for vb in vbs2.values())
    # the data volume: only the 64 KiB extents librbd's diff names (each chunk is far less than half changed, so
    # stored as pieces, docs/bank.md); the boot volume: nothing changed, nothing read
    assert vbs2[data.id].read_bytes == len(extents) * EXTENT_ALIGN < len(touched) * CHUNK // 4
    assert vbs2[boot.id].read_bytes == 0
    snap2 = rbd_snapshot_name(f"csbs-{_job(runtime, item2['id']).id}")
    # only the snapshot the next incremental needs is left on each image
    assert _opencsbs_snapshots(w, boot) == _opencsbs_snapshots(w, data) == [snap2]
    print(f"\nRBD full backup: {sum(v.size_bytes for v in vbs1.values()) / MIB:.0f} MiB of volumes, "
          f"{sum(v.read_bytes for v in vbs1.values()) / MIB:.0f} MiB read in {full_seconds:.1f} s "
          f"({sum(v.read_bytes for v in vbs1.values()) / MIB / max(sum(v.seconds for v in vbs1.values()), 1e-6):.0f}"
          f" MiB/s copying); server paused {pause:.2f} s; incremental read "
          f"{sum(v.read_bytes for v in vbs2.values()) / MIB:.0f} MiB in {incremental_seconds:.1f} s")

    # restore the full backup (the volumes changed since): Nova stops the server, librbd writes, not started
    rs = api.restore(item1, server.id, power_on=False)
    run_jobs(runtime)
    assert api.restore_status(rs["id"])["status"] == "success"
    assert w.admin.compute.get_server(server.id).status == "SHUTOFF"
    assert {boot.id: w.digest(boot), data.id: w.digest(data)} == expected1
    # the snapshots stay valid bases: librbd's diff sees the restore's writes like any other

    # restore the incremental one and start the server: byte-exact, and the guest boots from it again
    rs = api.restore(api.item(cp2), server.id, power_on=True)
    run_jobs(runtime)
    assert api.restore_status(rs["id"])["status"] == "success"
    assert w.digest(data) == expected2[data.id]
    assert w.wait_guest_boots(boot, 2) == 2  # booted from the restored sector (count 1), counting one more
    assert w.admin.compute.get_server(server.id).status == "ACTIVE"

    # a third backup after the restores is an incremental (librbd's diff includes the restore's writes), right
    cp3 = _sdk_protect(sdk_run, live_server, w.project_id, token, server.id, "rbd-after-restore", True)
    run_jobs(runtime)
    item3 = api.item(cp3)
    assert item3["status"] == "available", item3
    vbs3 = _volume_backups(runtime, item3["id"])
    # the same bytes as the second backup (compared by content: the volume hash also covers how each region is
    # stored, whole chunk or pieces, and the two backups stored the changed regions differently)
    assert _content(runtime.bank, vbs3[data.id].index_name) == _content(runtime.bank, vbs2[data.id].index_name)
    assert vbs3[data.id].incremental


def _content(bank, index_name: str) -> str:
    """SHA-256 of the volume the index ``index_name`` holds, read region by region from the bank."""
    idx = bank.read_index(index_name)
    h = hashlib.sha256()
    for i, entry in enumerate(idx.chunks):
        length = idx.chunk_length(i)
        h.update(bank.read_entry(entry, length) if entry else bytes(length))
    return h.hexdigest()


def _kill_during(runtime, proc: subprocess.Popen, item_id: str, step: str, delay: float) -> bool:
    """SIGKILL the worker process while it runs the job's ``step`` (after ``delay`` s in it); whether it did."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = _job(runtime, item_id)
        if job.status in ("done", "failed"):
            return False
        if job.status == "running" and job.step == step and job.owner and f":{proc.pid}:" in job.owner:
            time.sleep(delay)
            if _job(runtime, item_id).step == step:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
        time.sleep(0.02)
    raise AssertionError(f"the job never reached step {step}")


def _worker(config: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opencsbs", "--config", config, "worker"], stdout=log, stderr=log,
                            start_new_session=True)


@pytest.mark.parametrize("step,delay", [("start", 0.8), ("copy", 0.1)])
def test_worker_killed_mid_backup_is_resumed_and_leaks_no_snapshot(rbd_world, runtime, client, make_token,
                                                                   tmp_path, step, delay):
    w = rbd_world
    headers = {"X-Auth-Token": make_token(w.project_id, "member")}
    boot, data = w.rbd_volume(f"kill-{step}-boot"), w.rbd_volume(f"kill-{step}-data")
    w.write_pattern(data, 128 * MIB, seed=4)
    server = w.boot_guest(f"kill-{step}", boot, data=[data])
    expected = {boot.id: w.digest(boot), data.id: w.digest(data)}
    config = _config_file(runtime, tmp_path / "worker.yaml")
    log = open(tmp_path / "worker.log", "ab")
    try:
        r = client.post(f"/v1/{w.project_id}/providers/{PROVIDER}/resources/{server.id}/action",
                        json={"protect": {"backup_name": f"killed-in-{step}"}}, headers=headers)
        assert r.status_code == 200, r.text
        cp = r.json()["checkpoint"]["id"]
        item_id = client.get(f"/v1/{w.project_id}/checkpoint_items", params={"checkpoint_id": cp},
                             headers=headers).json()["checkpoint_items"][0]["id"]
        first = _worker(config, log)
        assert _kill_during(runtime, first, item_id, step, delay), "the worker finished before it could be killed"
        with runtime.sessions() as session:  # nothing reads available with missing data
            assert session.get(CheckpointItem, item_id).status == "protecting"
        second = _worker(config, log)
        deadline = time.monotonic() + 300
        while _job(runtime, item_id).status not in ("done", "failed"):
            assert time.monotonic() < deadline, "the job was not resumed"
            time.sleep(0.2)
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
    finally:
        log.close()
    job = _job(runtime, item_id)
    assert (job.status, job.attempts) == ("done", 2), (job.status, job.attempts, job.error)
    with runtime.sessions() as session:
        item = session.get(CheckpointItem, item_id)
        assert item.status == "available"
        assert all(vb.status == "available" for vb in item.volume_backups)
        assert session.scalars(select(ResourceLock)).all() == []
    # exactly the snapshot the next incremental needs, on each image; the server runs unpaused, unmarked
    snap = rbd_snapshot_name(f"csbs-{job.id}")
    assert _opencsbs_snapshots(w, boot) == _opencsbs_snapshots(w, data) == [snap]
    current = w.admin.compute.get_server(server.id)
    assert current.status == "ACTIVE" and PAUSE_MARK not in (current.metadata or {})
    assert w.domain_state(server) == "running"
    # and the backup holds the bytes of the volumes
    vbs = _volume_backups(runtime, item_id)
    for vid, digest in expected.items():
        idx = runtime.bank.read_index(vbs[vid].index_name)
        assert idx.size == 1024 * MIB
        target = w.rbd_volume(f"kill-{step}-check-{vid[:8]}")
        writer = runtime.driver.datapath._clusters[rw.BACKEND].open_writer(rw.VOLUMES_POOL, w.image_name(target))
        try:
            runtime.bank.restore_volume(vbs[vid].index_name, writer)
        finally:
            writer.close()
        assert w.digest(target) == digest


def test_another_projects_server_and_volume_are_refused_by_the_data_side(rbd_world, runtime, client, make_token):
    w = rbd_world
    foreign_volume = w.admin.block_storage.create_volume(size=1, name=w.name("foreign-rbd"),
                                                         volume_type=rw.VOLUME_TYPE)
    w.volumes.append(foreign_volume.id)
    w.admin.block_storage.wait_for_status(foreign_volume, "available", failures=["error"], interval=0.3, wait=120)
    foreign_server = w.from_image("foreign-srv", conn=w.admin)
    secret = w.write_pattern(foreign_volume, MIB, seed=9)
    ctx = CloudContext(project_id=w.project_id)
    driver = runtime.driver
    with pytest.raises(CSBSError) as err:
        driver.snapshot_server(ctx, foreign_server.id, "csbs-foreign")
    assert err.value.error_code == "CSBS.6000"
    for call in (lambda: driver.power_off(ctx, foreign_server.id), lambda: driver.power_on(ctx, foreign_server.id)):
        with pytest.raises(CSBSError) as err:
            call()
        assert err.value.error_code == "CSBS.6000"
    with pytest.raises(CSBSError) as err:
        driver.open_volume_writer(ctx, foreign_volume.id)
    assert err.value.error_code == "CSBS.6014"
    assert w.admin.compute.get_server(foreign_server.id).status == "ACTIVE"  # never stopped
    assert w.read(foreign_volume, rw.DATA_OFFSET, MIB) == secret  # never written
    assert _opencsbs_snapshots(w, foreign_volume) == []

    # through the API, whatever id is sent
    headers = {"X-Auth-Token": make_token(w.project_id, "member")}
    r = client.post(f"/v1/{w.project_id}/providers/{PROVIDER}/resources/{foreign_server.id}/action",
                    json={"protect": {"backup_name": "not-mine"}}, headers=headers)
    assert (r.status_code, r.json()["error_code"]) == (400, "CSBS.6000")


def test_a_volume_on_a_backend_that_is_not_rbd_is_refused_with_its_backend(rbd_world, runtime, client, make_token):
    w = rbd_world
    server = w.boot_from_volume("fake-backend")  # the fake Cinder backend, on the fake compute host
    headers = {"X-Auth-Token": make_token(w.project_id, "member")}
    r = client.post(f"/v1/{w.project_id}/providers/{PROVIDER}/resources/action", headers=headers,
                    json={"check_protectable": [{"resource_id": server.id, "resource_type": "OS::Nova::Server"}]})
    verdict = r.json()["protectable"][0]
    assert (verdict["result"], verdict["error_code"]) == (False, "CSBS.6061")
    assert "backend fake" in verdict["error_msg"]
    r = client.post(f"/v1/{w.project_id}/providers/{PROVIDER}/resources/{server.id}/action",
                    json={"protect": {"backup_name": "not-rbd"}}, headers=headers)
    assert (r.status_code, r.json()["error_code"]) == (400, "CSBS.6061")
    with pytest.raises(CSBSError) as err:
        runtime.driver.snapshot_server(CloudContext(project_id=w.project_id), server.id, "csbs-not-rbd")
    assert err.value.error_code == "CSBS.6061" and "Cinder backend fake" in err.value.error_msg


def test_ceph_unreachable_ends_the_backup_in_error_with_a_reason(rbd_world, runtime, client, make_token, tmp_path):
    """Workers whose Ceph does not answer retry the step, then fail the item with a reason a user reads; no
    snapshot, lock or pause is left behind."""
    from opencsbs.bootstrap import build_runtime

    w = rbd_world
    headers = {"X-Auth-Token": make_token(w.project_id, "member")}
    boot = w.rbd_volume("dead-ceph-boot")
    server = w.boot_guest("dead-ceph", boot)
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon_host = 127.0.0.1:9\n")  # nothing listens there
    dead = runtime.settings.model_copy(deep=True)
    dead.cloud.openstack_rbd_backends = {rw.BACKEND: RbdSettings(conf=conf, user=rw.CEPH_USER,
                                                                 keyring=rw.CEPH_KEYRING, connect_timeout=2)}
    dead.engine.max_attempts = 2
    r = client.post(f"/v1/{w.project_id}/providers/{PROVIDER}/resources/{server.id}/action",
                    json={"protect": {"backup_name": "ceph-down"}}, headers=headers)
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]["id"]
    broken = build_runtime(dead, migrate=False)
    deadline = time.monotonic() + 180
    try:
        while True:  # a transient failure gives the job back until its lease ends; then it is tried again
            run_jobs(broken)
            item = client.get(f"/v1/{w.project_id}/checkpoint_items", params={"checkpoint_id": cp},
                              headers=headers).json()["checkpoint_items"][0]
            if item["status"] != "protecting" or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        broken.close()
    assert item["status"] == "error"
    assert item["extend_info"]["fail_code"]["Code"] == 9999
    assert "connecting to Ceph as client.opencsbs (no monitor answered within 2 s)" in \
        item["extend_info"]["fail_reason"], item["extend_info"]
    assert _opencsbs_snapshots(w, boot) == []
    with runtime.sessions() as session:
        assert session.scalars(select(ResourceLock)).all() == []
    assert w.admin.compute.get_server(server.id).status == "ACTIVE"
