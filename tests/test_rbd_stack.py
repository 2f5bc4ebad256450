"""The Ceph RBD test stack itself (scripts/services/ceph.sh + openstack.sh): a Cinder volume of type ``rbd`` is an
image in pool ``volumes`` that opencsbs's Ceph user reads and writes, and a server booted from it in az-kvm really
runs under libvirt/QEMU: its guest's writes land in Ceph, across a stop and a start. The data-path tests build on
exactly this, so when it breaks they fail here first with a clear reason."""

from __future__ import annotations

import pytest

import rbd_world as rw

pytestmark = [pytest.mark.openstack, pytest.mark.ceph]


@pytest.fixture(scope="module")
def guest(rbd_world):
    """A server booted from a fresh 1 GiB RBD volume on kvm-host, ACTIVE, its first boot written to Ceph."""
    boot = rbd_world.rbd_volume("stack-boot")
    server = rbd_world.boot_guest("stack", boot)
    return server, boot


def test_rbd_volume_is_an_image_in_the_volumes_pool(rbd_world):
    vol = rbd_world.rbd_volume("stack-data")
    got = rbd_world.admin.block_storage.get_volume(vol.id)
    assert got.volume_type == rw.VOLUME_TYPE
    assert got.host.split("@")[1].split("#")[0] == rw.BACKEND
    with rbd_world.image(vol) as img:
        assert img.size() == vol.size * rw.GIB
    data = rbd_world.write_pattern(vol, 3 * rw.MIB + 5, seed=7)
    assert rbd_world.read(vol, rw.DATA_OFFSET, len(data)) == data
    # the default type stays on the fake backend: no image for it
    other = rbd_world.volume("stack-fake")
    assert rbd_world.admin.block_storage.get_volume(other.id).host.endswith("@fake#fake")
    import rbd

    assert rbd_world.image_name(other) not in rbd.RBD().list(rbd_world.ioctx())


def test_server_booted_from_rbd_runs_under_libvirt(rbd_world, guest):
    server, boot = guest
    got = rbd_world.admin.compute.get_server(server.id)
    assert got.status == "ACTIVE"
    assert got.compute_host == rw.KVM_HOST
    assert got.availability_zone == rw.AZ
    xml = rbd_world.domain_xml(server)
    assert "<domain type='kvm'" in xml or "<domain type='qemu'" in xml
    assert f"protocol='rbd' name='{rw.VOLUMES_POOL}/{rbd_world.image_name(boot)}'" in xml
    assert rbd_world.domain_state(server) == "running"
    assert rbd_world.guest_boots(boot) == 1


def test_guest_writes_reach_ceph_across_stop_and_start(rbd_world, guest):
    server, boot = guest
    before = rbd_world.guest_boots(boot)
    rbd_world.stop(server)
    assert rbd_world.domain_state(server) == "shut off"
    snap = rbd_world.cinder_snapshot(rbd_world.admin.block_storage.get_volume(boot.id))
    assert f"snapshot-{snap.id}" in rbd_world.rbd_snapshots(boot)
    rbd_world.start(server)
    assert rbd_world.wait_guest_boots(boot, before + 1) == before + 1
    # the snapshot keeps the count of the time it was taken
    assert rbd_world.guest_boots(boot, snapshot=f"snapshot-{snap.id}") == before
