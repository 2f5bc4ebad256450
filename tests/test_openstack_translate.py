"""Nova/Cinder/Ironic -> ServerFacts translation on API responses recorded from the test OpenStack
(tests/data/openstack/*.json: a server booted from a volume with a multiattach data volume, that volume, an Ironic
node deployed with fake hardware and its volume target), varied for states the fake drivers cannot be made to show
(crashed, deploy failed, deploying, ...)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from openstack.baremetal.v1.node import Node
from openstack.baremetal.v1.volume_target import VolumeTarget
from openstack.block_storage.v3.volume import Volume
from openstack.compute.v2.server import Server

from opencsbs.clouds.openstack.translate import baremetal_server_facts, baremetal_status, nova_server_facts
from opencsbs.core.facts import BAREMETAL_SERVER, SERVER, ProtectionState
from opencsbs.core.protectable import ProtectableConfig, check_protectable

DATA = Path(__file__).parent / "data" / "openstack"


def _load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def _server(**changes) -> Server:
    return Server.existing(**{**_load("nova_server_detail")["server"], **changes})


def _volumes(**changes) -> dict:
    body = {**_load("cinder_volume_detail")["volume"], **changes}
    return {body["id"]: Volume.existing(**body)}


def _node(**changes) -> Node:
    return Node.existing(**{**_load("ironic_node_detail"), **changes})


def _targets() -> list:
    return [VolumeTarget.existing(**t) for t in _load("ironic_volume_targets")["targets"]]


def test_recorded_server_with_its_multiattach_volume():
    server = _server()
    facts = nova_server_facts(server, _volumes(), {"multiattach": "EVS"})
    assert (facts.resource_type, facts.status, facts.task_state) == (SERVER, "ACTIVE", None)
    assert facts.project_id == server.project_id and facts.availability_zone == "az1"
    shared = next(v for v in facts.volumes if v.id in _volumes())
    assert (shared.shareable, shared.volume_type, shared.service_type, shared.bootable) == (
        True, "multiattach", "EVS", False)
    # the boot volume is not in the volume listing given here: known by id only, no flags
    other = next(v for v in facts.volumes if v.id not in _volumes())
    assert (other.status, other.shareable) == ("unknown", False)
    verdict = check_protectable(facts.id, SERVER, facts, ProtectionState(), ProtectableConfig())
    assert verdict.error_code == "CSBS.6010"


def test_volume_backend_comes_from_the_cinder_host():
    facts = nova_server_facts(_server(), _volumes(), {})
    recorded = next(v for v in facts.volumes if v.id in _volumes())
    assert recorded.backend == "fake"  # "os-vol-host-attr:host": "ci-host@fake#fake"
    moved = nova_server_facts(_server(), _volumes(**{"os-vol-host-attr:host": "node-2@ceph-ssd#ceph-ssd"}), {})
    assert next(v for v in moved.volumes if v.id in _volumes()).backend == "ceph-ssd"
    hidden = nova_server_facts(_server(), _volumes(**{"os-vol-host-attr:host": None}), {})  # a member's view
    assert next(v for v in hidden.volumes if v.id in _volumes()).backend is None
    single = dataclasses.replace(recorded, shareable=False)
    verdict = check_protectable(facts.id, SERVER, dataclasses.replace(facts, volumes=(single,)),
                                ProtectionState(), ProtectableConfig(data_backends=frozenset({"ceph"})))
    assert (verdict.error_code, "backend fake" in verdict.error_msg) == ("CSBS.6061", True)


def test_root_device_decides_the_system_disk_over_the_bootable_flag():
    vols = _volumes(bootable="false")
    vid = next(iter(vols))
    device = next(a["device"] for a in vols[vid].attachments if a["server_id"] == _server().id)
    server = _server(**{"OS-EXT-SRV-ATTR:root_device_name": device})
    facts = nova_server_facts(server, vols, None)
    assert next(v for v in facts.volumes if v.id == vid).bootable is True


def test_crashed_power_state_is_error():
    facts = nova_server_facts(_server(**{"OS-EXT-STS:power_state": 6}), _volumes(), None)
    assert facts.status == "ERROR"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ("ACTIVE", None)),
        ({"power_state": "power off"}, ("SHUTOFF", None)),
        ({"target_power_state": "power off"}, ("ACTIVE", "powering-off")),
        ({"target_power_state": "rebooting"}, ("ACTIVE", "rebooting")),
        ({"power_state": None}, ("UNKNOWN", None)),
        ({"maintenance": True}, ("ERROR", "maintenance")),
        ({"provision_state": "deploying"}, ("BUILD", "spawning")),
        ({"provision_state": "wait call-back"}, ("BUILD", "spawning")),
        ({"provision_state": "deploy failed"}, ("ERROR", None)),
        ({"provision_state": "deleting"}, ("ACTIVE", "deleting")),
        ({"provision_state": "rescue"}, ("RESCUE", None)),
        ({"provision_state": "available"}, ("DELETED", None)),
        ({"provision_state": "cleaning"}, ("DELETED", None)),
    ],
)
def test_ironic_node_states(changes, expected):
    assert baremetal_status(_node(**changes)) == expected


def test_recorded_standalone_bare_metal_instance():
    node = _node()
    facts = baremetal_server_facts(node, None, _targets(), _volumes(), None)
    assert (facts.id, facts.resource_type, facts.status) == (node.instance_id, BAREMETAL_SERVER, "ACTIVE")
    assert facts.project_id == node.lessee  # lessee before owner
    assert facts.name == "bms-1"
    (vol,) = facts.volumes
    assert (vol.id, vol.bootable, vol.shareable) == (next(iter(_volumes())), False, True)
    verdict = check_protectable(facts.id, BAREMETAL_SERVER, facts, ProtectionState(), ProtectableConfig())
    assert verdict.error_code == "CSBS.6010"


def test_bare_metal_instance_known_to_nova_keeps_novas_volumes_and_refusals():
    node = _node()
    nova = nova_server_facts(_server(id=node.instance_id, status="SHUTOFF"), _volumes(), None)
    facts = baremetal_server_facts(node, nova, _targets(), _volumes(), None)
    assert facts.volumes == nova.volumes and facts.project_id == nova.project_id
    assert facts.status == "ACTIVE"  # Nova's SHUTOFF is protectable: Ironic's power state speaks
    busy = nova_server_facts(_server(id=node.instance_id, **{"OS-EXT-STS:task_state": "rebuilding"}), {}, None)
    assert baremetal_server_facts(node, busy, [], {}, None).task_state == "rebuilding"
