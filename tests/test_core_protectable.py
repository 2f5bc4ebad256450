"""core.protectable: every rule, their order, the 6004 case and the wire shape (pure: facts in, verdicts out).

Expected messages are the templates of csbs-api-reference/appendixes/error_codes.rst, filled in."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencsbs.core import codes
from opencsbs.core.facts import BAREMETAL_SERVER, SERVER, VOLUME, ProtectionState, ServerFacts, VolumeFacts
from opencsbs.core.protectable import ProtectableConfig, Verdict, check_many, check_protectable

SID = "6507cb66-90dc-4a12-a573-c9f3398f899d"
SYS = VolumeFacts(id="vol-sys", size_gb=40, bootable=True, service_type="EVS")
DATA = VolumeFacts(id="vol-data", size_gb=100, service_type="EVS")
IDLE = ProtectionState()
CFG = ProtectableConfig(azs_without_backup=frozenset({"az-nobackup"}))


def server(**kw) -> ServerFacts:
    base = dict(id=SID, project_id="demo", name="web-1", status="ACTIVE", availability_zone="az1", volumes=(SYS, DATA))
    base.update(kw)
    return ServerFacts(**base)


def check(srv=None, state=IDLE, rtype=SERVER, cfg=CFG, rid=SID):
    return check_protectable(rid, rtype, srv, state, cfg)


# --- one rule at a time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["ACTIVE", "SHUTOFF", "active", "Shutoff"])
def test_running_or_stopped_server_passes_without_error_fields(status):
    v = check(server(status=status))
    assert v == Verdict(SID, SERVER, True)
    assert v.to_wire() == {"resource_id": SID, "resource_type": SERVER, "result": True}


def test_bare_metal_server_passes():
    v = check(server(resource_type=BAREMETAL_SERVER), rtype=BAREMETAL_SERVER)
    assert v.to_wire() == {"resource_id": SID, "resource_type": BAREMETAL_SERVER, "result": True}


def test_unknown_server_6000():
    v = check(None)
    assert v.to_wire() == {"resource_id": SID, "resource_type": SERVER, "result": False,
                           "error_code": "CSBS.6000", "error_msg": "server do not exist"}


def test_server_asked_under_the_other_server_type_is_6000():
    assert check(server(resource_type=BAREMETAL_SERVER), rtype=SERVER).error_code == "CSBS.6000"
    assert check(server(), rtype=BAREMETAL_SERVER).error_code == "CSBS.6000"


@pytest.mark.parametrize("status", ["DELETED", "SOFT_DELETED", "deleted", "soft_deleted"])
def test_terminated_6001(status):
    v = check(server(status=status))
    assert (v.result, v.error_code, v.error_msg) == (False, "CSBS.6001", "The server has stopped.")


@pytest.mark.parametrize("rtype", [VOLUME, "OS::Glance::Image", "os::nova::server", "", "anything"])
def test_unsupported_type_6003(rtype):
    v = check(server(), rtype=rtype)
    assert (v.result, v.error_code) == (False, "CSBS.6003")
    assert v.error_msg == f"Resource ({SID}) type ({rtype}) is not support protection."
    assert v.resource_type == rtype


def test_type_the_driver_cannot_back_up_6003():
    cfg = dataclasses.replace(CFG, protectable_types=frozenset({SERVER}))
    v = check(server(resource_type=BAREMETAL_SERVER), rtype=BAREMETAL_SERVER, cfg=cfg)
    assert (v.error_code, v.error_msg) == (
        "CSBS.6003", f"Resource ({SID}) type ({BAREMETAL_SERVER}) is not support protection.")


@pytest.mark.parametrize("status", ["BUILD", "ERROR", "PAUSED", "SUSPENDED", "SHELVED", "SHELVED_OFFLOADED",
                                    "RESIZE", "VERIFY_RESIZE", "REBOOT", "HARD_REBOOT", "MIGRATING", "RESCUE",
                                    "REBUILD", "PASSWORD", "UNKNOWN", ""])
def test_status_not_allowed_6006(status):
    v = check(server(status=status))
    assert (v.result, v.error_code) == (False, "CSBS.6006")
    assert v.error_msg == f"Server ({SID}) status ({status}) is not allowed to protect."


@pytest.mark.parametrize("task", ["resize_migrating", "migrating", "image_snapshot", "rebooting", "powering-off"])
def test_task_in_progress_6006(task):
    v = check(server(status="ACTIVE", task_state=task))
    assert (v.result, v.error_code) == (False, "CSBS.6006")
    assert v.error_msg == f"Server ({SID}) status (ACTIVE({task})) is not allowed to protect."


@pytest.mark.parametrize("operation", ["backup", "restore"])
def test_running_backup_or_restore_6005(operation):
    v = check(server(), ProtectionState(busy_operation=operation))
    assert (v.result, v.error_code, v.error_msg) == (False, "CSBS.6005", f"Server ({SID}) is already in service.")


def test_az_without_backup_6027():
    v = check(server(availability_zone="az-nobackup"))
    assert (v.result, v.error_code) == (False, "CSBS.6027")
    assert v.error_msg == f"The AZ where the resource ({SID}) is located does not support backup."
    assert check(server(availability_zone="az-nobackup"), cfg=ProtectableConfig()).result is True
    assert check(server(availability_zone=None)).result is True


def test_no_volume_6007():
    v = check(server(volumes=()))
    assert (v.result, v.error_code, v.error_msg) == (
        False, "CSBS.6007", f"No volume attached to the server ({SID}) for protect.")


def test_shareable_volume_6010_names_the_volume():
    shared = VolumeFacts(id="vol-shared", shareable=True)
    v = check(server(volumes=(SYS, DATA, shared)))
    assert (v.result, v.error_code, v.error_msg) == (
        False, "CSBS.6010", f"Volume (vol-shared) attached to server ({SID}) is shareable volume.")


@pytest.mark.parametrize("service_type", ["DSS", "dss", "Dss"])
def test_dss_volume_6033(service_type):
    dss = VolumeFacts(id="vol-dss", service_type=service_type, volume_type="DSS-SAS")
    v = check(server(volumes=(SYS, dss)))
    assert (v.result, v.error_code, v.error_msg) == (
        False, "CSBS.6033", f"Service type of volume vol-dss(belong to server {SID}) is dss.")


def test_unprotectable_service_types_are_configurable():
    cfg = dataclasses.replace(CFG, unprotectable_service_types=frozenset({"sfs"}))
    dss = VolumeFacts(id="vol-dss", service_type="DSS")
    sfs = VolumeFacts(id="vol-sfs", service_type="SFS")
    assert check(server(volumes=(SYS, dss)), cfg=cfg).result is True
    assert check(server(volumes=(SYS, sfs)), cfg=cfg).error_code == "CSBS.6033"


def test_volume_on_a_backend_the_driver_cannot_read_6061_names_it():
    cfg = dataclasses.replace(CFG, data_backends=frozenset({"ceph"}))
    lvm = VolumeFacts(id="vol-lvm", backend="lvm-1")
    rbd = VolumeFacts(id="vol-rbd", backend="ceph")
    unknown = VolumeFacts(id="vol-unknown")  # the cloud did not say (a member's token): not refused here
    v = check(server(volumes=(rbd, lvm)), cfg=cfg)
    assert (v.result, v.error_code) == (False, "CSBS.6061")
    assert v.error_msg == ("volume of server in this pod does not support backup: volume vol-lvm is on storage "
                           "backend lvm-1, whose data opencsbs cannot read.")
    assert check(server(volumes=(rbd, unknown)), cfg=cfg).result is True
    assert check(server(volumes=(rbd, lvm))).result is True  # the driver does not tell its backends
    dss = VolumeFacts(id="vol-dss", service_type="DSS", backend="lvm-1")
    assert check(server(volumes=(dss,)), cfg=cfg).error_code == "CSBS.6033"  # the earlier rule decides


def test_bound_to_policy_6004_keeps_result_true():
    state = ProtectionState(policy_id="pol-1", policy_name="daily")
    v = check(server(), state)
    assert v.result is True
    assert v.error_code == "CSBS.6004"
    assert v.error_msg.startswith(f"Server ({SID}) is already in service.")
    assert "daily" in v.error_msg and "pol-1" in v.error_msg
    assert v.to_wire() == {"resource_id": SID, "resource_type": SERVER, "result": True,
                           "error_code": "CSBS.6004", "error_msg": v.error_msg}


def test_bound_but_refused_reports_the_refusal_not_6004():
    state = ProtectionState(policy_id="pol-1", policy_name="daily")
    assert check(server(status="ERROR"), state).error_code == "CSBS.6006"
    assert check(server(volumes=()), state).error_code == "CSBS.6007"


def test_messages_come_from_the_appendix():
    """The templates the rules fill are the appendix's, verbatim."""
    assert codes.SERVER_NOT_FOUND.template == "server do not exist"
    assert codes.SERVER_TERMINATED.template == "The server has stopped."
    assert codes.TYPE_NOT_PROTECTABLE.template == "Resource (%s) type (%s) is not support protection."
    assert codes.SERVER_BOUND_TO_POLICY.template == "Server (%s) is already in service."
    assert codes.SERVER_BUSY.template == "Server (%s) is already in service."
    assert codes.SERVER_STATUS_NOT_ALLOWED.template == "Server (%s) status (%s) is not allowed to protect."
    assert codes.NO_VOLUME.template == "No volume attached to the server (%s) for protect."
    assert codes.SHAREABLE_VOLUME.template == "Volume (%s) attached to server (%s) is shareable volume."
    assert codes.AZ_NOT_SUPPORTED.template == "The AZ where the resource (%s) is located does not support backup."
    assert codes.DSS_VOLUME.template == "Service type of volume %s(belong to server %s) is dss."
    for code in (codes.SERVER_NOT_FOUND, codes.SERVER_TERMINATED, codes.TYPE_NOT_PROTECTABLE, codes.SERVER_BUSY,
                 codes.SERVER_STATUS_NOT_ALLOWED, codes.NO_VOLUME, codes.SHAREABLE_VOLUME, codes.AZ_NOT_SUPPORTED,
                 codes.DSS_VOLUME, codes.SERVER_BOUND_TO_POLICY):
        assert code.status == 400


# --- the order ----------------------------------------------------------------------------------------------

#: every way a server can fail, in the documented order, with the facts that make it fail
ORDER = [
    ("CSBS.6003", dict(rtype=VOLUME)),
    ("CSBS.6000", dict(missing=True)),
    ("CSBS.6001", dict(status="SOFT_DELETED")),
    ("CSBS.6006", dict(status="ERROR")),
    ("CSBS.6005", dict(busy="backup")),
    ("CSBS.6027", dict(availability_zone="az-nobackup")),
    ("CSBS.6007", dict(no_volumes=True)),
    ("CSBS.6010", dict(shareable=True)),
    ("CSBS.6033", dict(dss=True)),
]


def build(faults: set[str]):
    """Arguments of check_protectable for a server having the given faults (codes from ORDER)."""
    spec = {}
    for code, facts in reversed(ORDER):  # an earlier rule's facts win where two set the same one (status)
        if code in faults:
            spec.update(facts)
    volumes = [SYS]
    if spec.get("shareable"):
        volumes.append(VolumeFacts(id="vol-shared", shareable=True))
    if spec.get("dss"):
        volumes.append(VolumeFacts(id="vol-dss", service_type="DSS"))
    if spec.get("no_volumes"):
        volumes = []
    srv = None if spec.get("missing") else server(
        status=spec.get("status", "ACTIVE"), availability_zone=spec.get("availability_zone", "az1"),
        volumes=tuple(volumes))
    state = ProtectionState(busy_operation=spec.get("busy"))
    return spec.get("rtype", SERVER), srv, state


@pytest.mark.parametrize("i", range(len(ORDER)))
def test_each_rule_beats_every_later_one(i):
    code = ORDER[i][0]
    faults = {c for c, _ in ORDER[i:]}
    rtype, srv, state = build(faults)
    assert check(srv, state, rtype).error_code == code


@settings(max_examples=300, deadline=None)
@given(st.sets(st.sampled_from([c for c, _ in ORDER])), st.booleans())
def test_first_failing_rule_decides(faults, bound):
    rtype, srv, state = build(faults)
    if bound:
        state = dataclasses.replace(state, policy_id="pol-1", policy_name="daily")
    v = check(srv, state, rtype)
    expected = next((c for c, _ in ORDER if c in faults), None)
    if expected is None:
        assert v.result is True
        assert v.error_code == ("CSBS.6004" if bound else None)
    else:
        assert (v.result, v.error_code) == (False, expected)
    wire = v.to_wire()
    assert ("error_code" in wire) == ("error_msg" in wire) == (v.error_code is not None)


# --- batches ------------------------------------------------------------------------------------------------


def test_check_many_keeps_order_duplicates_and_defaults():
    other = server(id="srv-2", status="ERROR")
    servers = {SID: server(), "srv-2": other}
    states = {"srv-2": ProtectionState(policy_id="p", policy_name="n")}
    items = [("srv-2", SERVER), (SID, SERVER), ("nope", SERVER), (SID, SERVER), (SID, VOLUME)]
    verdicts = check_many(items, servers, states, CFG)
    assert [(v.resource_id, v.resource_type) for v in verdicts] == items
    assert [v.error_code for v in verdicts] == ["CSBS.6006", None, "CSBS.6000", None, "CSBS.6003"]


def test_check_many_empty():
    assert check_many([], {}, {}, CFG) == []


def test_code_format_fills_and_pads():
    assert codes.SHAREABLE_VOLUME.format("v") == "Volume (v) attached to server (?) is shareable volume."
    assert codes.SERVER_NOT_FOUND.format("ignored") == "server do not exist"
