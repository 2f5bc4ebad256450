"""Restore drills of OpenStack servers on Ceph RBD restore onto a scratch RBD image (docs/verify.md, "Restore
drills"): the image is made in the volume's pool while the drill restores, every byte is read back from it and
compared with the backup's recorded hashes, the RTO is measured, and the image is gone afterwards, also when the
drill fails (a copy that differs, a chunk damaged in the bank).

Needs ``scripts/services/ceph.sh start`` then ``scripts/services/openstack.sh start`` (tests/rbd_world.py).
"""

from __future__ import annotations

import pytest

import rbd_world as rw
from opencsbs.bank.layout import chunk_key
from opencsbs.clouds.rbd import RbdScratch
from opencsbs.config import RbdSettings

from engine_helpers import PROVIDER, run_jobs

pytestmark = [pytest.mark.ceph, pytest.mark.openstack, pytest.mark.slow]

MIB = rw.MIB
SCRATCH_PREFIX = "opencsbs-drill-"


@pytest.fixture
def settings(settings, rbd_world):
    settings.cloud.driver = "openstack"
    settings.cloud.openstack_cloud = "opencsbs-service"
    settings.cloud.openstack_clouds_yaml = rw.ow.CLOUDS_YAML
    settings.cloud.openstack_timeout = 30
    settings.cloud.openstack_rbd_backends = {k: RbdSettings(**v) for k, v in rw.rbd_backends_setting().items()}
    settings.cloud.openstack_power_timeout = 180
    return settings


def _scratch_images(world) -> list[str]:
    import rbd

    return [n for n in rbd.RBD().list(world.ioctx(rw.VOLUMES_POOL)) if n.startswith(SCRATCH_PREFIX)]


def _drill(client, headers, project: str, item_id: str, runtime) -> dict:
    v = f"/opencsbs/v1/{project}"
    r = client.post(f"{v}/drills", json={"drill": {"choice": "id", "checkpoint_item_id": item_id}}, headers=headers)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    return client.get(f"{v}/drills/{r.json()['drill']['id']}", headers=headers).json()["drill"]


def test_a_drill_restores_onto_a_scratch_rbd_image_compares_it_and_removes_it(rbd_world, runtime, client,
                                                                              make_token, monkeypatch):
    w = rbd_world
    member = {"X-Auth-Token": make_token(w.project_id, "member")}
    admin = {"X-Auth-Token": make_token(w.project_id, "admin")}
    boot = w.rbd_volume("drill-boot")
    server = w.boot_guest("drill", boot)
    w.write_pattern(boot, 12 * MIB, seed=31)
    r = client.post(f"/v1/{w.project_id}/providers/{PROVIDER}/resources/{server.id}/action",
                    json={"protect": {"backup_name": "drilled"}}, headers=member)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    item = client.get(f"/v1/{w.project_id}/checkpoint_items", params={"checkpoint_id": r.json()["checkpoint"]["id"]},
                      headers=member).json()["checkpoint_items"][0]
    assert item["status"] == "available", item
    index = f"checkpoints/{item['checkpoint_id']}/{item['extend_info']['volume_backups'][0]['id']}"

    # while the bank restores, the scratch image exists in the volume's pool, as big as the volume
    seen: list[tuple[list[str], int]] = []
    restore_volume = runtime.bank.restore_volume

    def watched(name, writer, progress=None):
        images = _scratch_images(w)
        with w.image(name=images[0], read_only=True) as img:
            seen.append((images, img.size()))
        return restore_volume(name, writer, progress)

    monkeypatch.setattr(runtime.bank, "restore_volume", watched)
    drill = _drill(client, admin, w.project_id, item["id"], runtime)
    assert drill["status"] == "passed", drill
    assert drill["rto_seconds"] > 0 and drill["bytes_restored"] == boot.size * rw.GIB
    vol = drill["volumes"][0]
    assert vol["scratch"].startswith(f"RBD image {rw.VOLUMES_POOL}/{SCRATCH_PREFIX}{drill['id']}-"), vol
    assert seen and seen[0][0] == [vol["scratch"].split("/", 1)[1]] and seen[0][1] == boot.size * rw.GIB
    assert _scratch_images(w) == []
    assert not list((runtime.settings.data_dir / "drills").glob("*/*"))  # nothing restored on the host

    # what is read back is compared: a copy that differs on the RBD image fails the drill; the image still goes
    open_writer = RbdScratch.writer

    def corrupting(self):
        inner = open_writer(self)
        write = inner.write

        def write_once_wrong(offset, data, _done=[]):  # noqa: B006 - one flipped byte, on the first write
            if not _done and data:
                _done.append(True)
                data = bytes([data[0] ^ 0x01]) + bytes(data[1:])
            return write(offset, data)

        inner.write = write_once_wrong
        return inner

    monkeypatch.setattr(RbdScratch, "writer", corrupting)
    drill = _drill(client, admin, w.project_id, item["id"], runtime)
    assert drill["status"] == "failed" and "restored copy differs" in drill["message"], drill
    assert _scratch_images(w) == []
    monkeypatch.setattr(RbdScratch, "writer", open_writer)

    # a chunk damaged in the bank: the restore stops, the drill fails naming it, the image is removed
    victim = sorted(runtime.bank.read_index(index).addresses())[0]
    blob = bytearray(runtime.bank.store.get(chunk_key(victim)))
    blob[-1] ^= 0x80
    runtime.bank.store.put(chunk_key(victim), bytes(blob))
    drill = _drill(client, admin, w.project_id, item["id"], runtime)
    assert drill["status"] == "failed" and drill["rto_seconds"] is None, drill
    assert _scratch_images(w) == []
