"""The libvirt domain -> ServerFacts translation (pure; states libvirt cannot be made to show on demand)."""

from __future__ import annotations

import pytest

from opencsbs.clouds.libvirt.domain import parse_domain_xml, server_facts, server_status, system_disk

UUID = "3b0d5c6e-8d4f-4c3a-9f51-2d7c1e0a9b11"


def _xml(devices: str, os_boot: str = "<boot dev='hd'/>", metadata: str = "") -> str:
    return (
        f"<domain type='kvm'><name>web</name><uuid>{UUID}</uuid>{metadata}<memory unit='KiB'>2097152</memory>"
        f"<vcpu>2</vcpu><os><type>hvm</type>{os_boot}</os><devices>{devices}</devices></domain>"
    )


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (1, 1, ("ACTIVE", None)),
        (2, 0, ("ACTIVE", None)),
        (1, 2, ("ACTIVE", "migrating")),
        (3, 1, ("PAUSED", None)),
        (3, 2, ("MIGRATING", "migrating")),
        (3, 9, ("ACTIVE", "image_snapshot")),
        (3, 11, ("BUILD", "spawning")),
        (4, 1, ("ACTIVE", "powering-off")),
        (5, 1, ("SHUTOFF", None)),
        (6, 1, ("ERROR", None)),
        (7, 0, ("SUSPENDED", None)),
        (0, 0, ("BUILD", None)),
    ],
)
def test_libvirt_states_map_to_nova_states(state, reason, expected):
    assert server_status(state, reason) == expected


def test_disks_serial_shareable_boot_order_and_cdrom():
    info = parse_domain_xml(
        _xml(
            "<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc'/></disk>"
            "<disk type='block' device='disk'><source dev='/dev/vg/data'/><target dev='vdb'/>"
            "<serial>8f1a-vol</serial><shareable/></disk>"
            "<disk type='volume' device='disk'><source pool='default' volume='root.qcow2'/><target dev='vda'/>"
            "<boot order='1'/></disk>",
            os_boot="",
        )
    )
    assert [d.target for d in info.disks] == ["vdb", "vda"]
    assert system_disk(info) == "vda"
    stats = {"state.state": 1, "state.reason": 1, "block.count": 3, "block.0.name": "hdc",
             "block.1.name": "vdb", "block.1.capacity": 10 * 1024**3 + 1, "block.2.name": "vda",
             "block.2.capacity": 20 * 1024**3}
    facts = server_facts(info, stats, "p1", "az1")
    by_name = {v.name: v for v in facts.volumes}
    assert (by_name["vdb"].id, by_name["vdb"].shareable, by_name["vdb"].bootable, by_name["vdb"].size_gb) == (
        "8f1a-vol", True, False, 11)
    assert (by_name["vda"].id, by_name["vda"].bootable, by_name["vda"].size_gb) == ("default/root.qcow2", True, 20)
    assert facts.flavor == {"vcpus": 2, "ram": 2048}
    assert info.sourced_targets == frozenset({"hdc", "vdb", "vda"})


def test_network_boot_has_no_system_disk():
    info = parse_domain_xml(_xml("<disk type='file' device='disk'><source file='/d'/><target dev='vda'/></disk>",
                                 os_boot="<boot dev='network'/>"))
    assert system_disk(info) is None


def test_project_from_metadata_then_nova_owner_then_default():
    own = parse_domain_xml(_xml("", metadata=(
        "<metadata><opencsbs:server xmlns:opencsbs='https://opencsbs.org/xmlns/libvirt/1' project_id='p9' "
        "availability_zone='az9'/></metadata>")))
    facts = server_facts(own, {"state.state": 5}, "default", "az1")
    assert (facts.project_id, facts.availability_zone, facts.status) == ("p9", "az9", "SHUTOFF")
    nova = parse_domain_xml(_xml("", metadata=(
        "<metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'><nova:owner>"
        "<nova:project uuid='abc'>demo</nova:project></nova:owner></nova:instance></metadata>")))
    assert server_facts(nova, {"state.state": 1}, "default", "az1").project_id == "abc"
    bare = parse_domain_xml(_xml(""))
    assert server_facts(bare, {"state.state": 1}, "default", "az1").project_id == "default"
    # no metadata and no configured owner: nobody's server
    assert server_facts(bare, {"state.state": 1}, None, "az1") is None
