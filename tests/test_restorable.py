"""check_restorable: every restore rule (core/restorable.py), through the pure module and through HTTP."""

from __future__ import annotations

import pytest

from engine_helpers import (BMS1, DB1, DB1_SYS, PROVIDER, WEB1, WEB1_DATA, WEB1_SYS, item_of, protect, restore,
                            run_jobs)
from opencsbs.core.facts import BAREMETAL_SERVER, SERVER, ProtectionState, ServerFacts, VolumeFacts
from opencsbs.core.restorable import BackupFacts, DiskBackupFacts, check_restorable

SYS = VolumeFacts("v-sys", size_gb=10, bootable=True)
DATA = VolumeFacts("v-data", size_gb=20)
TARGET = ServerFacts("srv", "p", status="SHUTOFF", availability_zone="az1", volumes=(SYS, DATA))
BACKUP = BackupFacts("item", "available", "srv", SERVER, "az1",
                     (DiskBackupFacts("b-sys", "v-sys", 10, True), DiskBackupFacts("b-data", "v-data", 20)))
MAP = (("b-sys", "v-sys"), ("b-data", "v-data"))
IDLE = ProtectionState()


def verdict(backup=BACKUP, target=TARGET, state=IDLE, mapping=MAP, target_type=SERVER, types=frozenset({SERVER})):
    v = check_restorable("item", backup, "srv", target_type, target, state, mapping, types)
    return v.error_code if not v.result else "ok"


def replace(obj, **kw):
    from dataclasses import replace as r

    return r(obj, **kw)


@pytest.mark.parametrize("expected,kwargs", [
    ("ok", {}),
    ("CSBS.3001", {"backup": None}),
    ("CSBS.4000", {"backup": replace(BACKUP, status="protecting")}),
    ("CSBS.4000", {"backup": replace(BACKUP, status="error")}),
    ("CSBS.6013", {"target_type": "OS::Cinder::Volume"}),
    ("CSBS.6016", {"backup": replace(BACKUP, resource_type=BAREMETAL_SERVER),
                   "target": replace(TARGET, resource_type=BAREMETAL_SERVER)}),
    ("CSBS.6000", {"target": None}),
    ("CSBS.6000", {"target": replace(TARGET, status="SOFT_DELETED")}),
    ("CSBS.6019", {"target": replace(TARGET, resource_type=BAREMETAL_SERVER),
                   "types": frozenset({SERVER, BAREMETAL_SERVER})}),
    ("CSBS.6015", {"state": ProtectionState(busy_operation="restore")}),
    ("CSBS.6005", {"state": ProtectionState(busy_operation="backup")}),
    ("CSBS.6006", {"target": replace(TARGET, status="ERROR")}),
    ("CSBS.6006", {"target": replace(TARGET, task_state="resize_migrating")}),
    ("CSBS.6025", {"target": replace(TARGET, availability_zone="az2")}),
    ("CSBS.6020", {"target": replace(TARGET, volumes=())}),
    ("CSBS.6021", {"target": replace(TARGET, volumes=(SYS, replace(DATA, shareable=True)))}),
    ("CSBS.9001", {"mapping": (("b-sys", "v-sys"), ("b-sys", "v-data"))}),
    ("CSBS.6017", {"mapping": (("b-sys", "v-sys"), ("b-nope", "v-data"))}),
    ("CSBS.6014", {"mapping": (("b-sys", "v-sys"), ("b-data", "v-elsewhere"))}),
    ("CSBS.6018", {"mapping": (("b-sys", "v-sys"),)}),
    ("CSBS.6023", {"mapping": (("b-sys", "v-data"), ("b-data", "v-sys"))}),
    ("CSBS.6024", {"target": replace(TARGET, volumes=(SYS, replace(DATA, size_gb=5)))}),
])
def test_each_rule(expected, kwargs):
    assert verdict(**kwargs) == expected


def test_a_bigger_disk_and_a_running_server_are_fine():
    big = replace(TARGET, status="ACTIVE", volumes=(replace(SYS, size_gb=40), replace(DATA, size_gb=80)))
    assert verdict(target=big) == "ok"
    # a system-disk backup may go onto a data disk (only data → system is refused)
    sys_only = replace(BACKUP, disks=(DiskBackupFacts("b-sys", "v-sys", 10, True),))
    assert verdict(backup=sys_only, mapping=(("b-sys", "v-data"),)) == "ok"


def _check(client, headers, item_id, target, volumes, rtype=SERVER):
    r = client.post(f"/v1/demo/providers/{PROVIDER}/resources/action", headers=headers, json={
        "check_restorable": [{"checkpoint_item_id": item_id,
                              "target": {"resource_id": target, "resource_type": rtype, "volumes": volumes}}]})
    assert r.status_code == 200, r.text
    (answer,) = r.json()["restorable"]
    return answer


def test_check_restorable_over_http(demo, runtime):
    client, headers = demo
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    protecting = item_of(client, headers, cp["id"])
    vbs = protecting["extend_info"]["volume_backups"]
    full = [{"backup_id": vbs[0]["id"], "volume_id": WEB1_SYS}, {"backup_id": vbs[1]["id"], "volume_id": WEB1_DATA}]
    assert _check(client, headers, protecting["id"], WEB1, full)["error_code"] == "CSBS.4000"
    run_jobs(runtime)
    ok = _check(client, headers, protecting["id"], WEB1, full)
    assert ok == {"resource_id": WEB1, "resource_type": SERVER, "result": True, "error_code": "", "error_msg": ""}
    assert _check(client, headers, protecting["id"], WEB1, full[:1])["error_code"] == "CSBS.6018"
    swapped = [{"backup_id": vbs[1]["id"], "volume_id": WEB1_SYS}, {"backup_id": vbs[0]["id"], "volume_id": WEB1_DATA}]
    assert _check(client, headers, protecting["id"], WEB1, swapped)["error_code"] == "CSBS.6023"
    assert _check(client, headers, protecting["id"], DB1, full)["error_code"] == "CSBS.6014"
    assert _check(client, headers, protecting["id"], BMS1, full, BAREMETAL_SERVER)["error_code"] == "CSBS.6019"
    assert _check(client, headers, protecting["id"], WEB1, full, "OS::Cinder::Volume")["error_code"] == "CSBS.6013"
    assert _check(client, headers, "no-such-item", WEB1, full)["error_code"] == "CSBS.3001"
    assert _check(client, headers, protecting["id"], "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013", full)[
        "error_code"] == "CSBS.6000"
    # POST /restores is refused with the same code, and nothing is started
    item = item_of(client, headers, cp["id"])
    r = restore(client, headers, item, DB1)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6014"
    assert item_of(client, headers, cp["id"])["status"] == "available"
    # while a restore runs, the target reads 6015 and a second restore is refused
    assert restore(client, headers, item, WEB1, power_on=False).status_code == 200
    item2 = dict(item)
    r = restore(client, headers, item2, WEB1)
    assert r.status_code == 400 and r.json()["error_code"] in ("CSBS.4000", "CSBS.6015")
    assert _check(client, headers, item["id"], WEB1, full)["error_code"] in ("CSBS.4000", "CSBS.6015")
    r = client.post(f"/v1/demo/providers/{PROVIDER}/resources/action", headers=headers, json={
        "check_protectable": [{"resource_id": WEB1, "resource_type": SERVER}]})
    assert r.json()["protectable"][0]["error_code"] == "CSBS.6005"
    run_jobs(runtime)
    # power_on=False honoured: the server stays off after the restore
    from opencsbs.clouds.base import CloudContext

    assert runtime.driver.get_servers(CloudContext("demo"), [WEB1])[WEB1].status == "SHUTOFF"
    assert restore(client, headers, item, WEB1, power_on=True).status_code == 200
    run_jobs(runtime)
    assert runtime.driver.get_servers(CloudContext("demo"), [WEB1])[WEB1].status == "ACTIVE"


def test_restore_onto_another_server(demo, runtime):
    """A backup of db-1 restores onto web-1's system disk (same AZ and type, disk large enough)."""
    from engine_helpers import digest, fill

    client, headers = demo
    fill(runtime, DB1_SYS, 5)
    cp = protect(client, headers, DB1).json()["checkpoint"]
    run_jobs(runtime)
    item = item_of(client, headers, cp["id"])
    vb = item["extend_info"]["volume_backups"][0]
    volumes = [{"backup_id": vb["id"], "volume_id": WEB1_SYS}]
    assert _check(client, headers, item["id"], WEB1, volumes)["result"] is True
    body = {"restore": {"provider_id": PROVIDER, "checkpoint_id": item["checkpoint_id"],
                        "parameters": {"checkpoint_item_id": item["id"], "power_on": True,
                                       "targets": {"server_id": WEB1, "volumes": volumes}}}}
    r = client.post("/v1/demo/restores", json=body, headers=headers)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    assert digest(runtime, WEB1_SYS) == digest(runtime, DB1_SYS)
    bad = dict(body["restore"], checkpoint_id="not-its-checkpoint")
    r = client.post("/v1/demo/restores", json={"restore": bad}, headers=headers)
    assert r.status_code == 404
    r = client.post("/v1/demo/restores", json={"restore": {**body["restore"], "provider_id": "x"}}, headers=headers)
    assert r.status_code == 400
    r = client.post("/v1/demo/restores", json={"restore": {"checkpoint_id": "x"}}, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"


def test_unknown_ids_answer_not_found_before_any_rule(demo, runtime, make_token):
    """POST /restores: a wrong checkpoint_id or checkpoint_item_id is 404 CSBS.3001 whatever else is wrong
    (a bogus mapping would be CSBS.6017, an unknown target CSBS.6000); check_restorable likewise."""
    client, headers = demo
    first = protect(client, headers, WEB1).json()["checkpoint"]
    second = protect(client, headers, DB1).json()["checkpoint"]
    run_jobs(runtime)
    item, other = item_of(client, headers, first["id"]), item_of(client, headers, second["id"])
    bogus = [{"backup_id": "no-such-disk-backup", "volume_id": "no-such-volume"}]

    def post(checkpoint_id, item_id, target=WEB1, volumes=bogus, h=headers, project="demo"):
        return client.post(f"/v1/{project}/restores", headers=h, json={"restore": {
            "provider_id": PROVIDER, "checkpoint_id": checkpoint_id,
            "parameters": {"checkpoint_item_id": item_id, "power_on": True,
                           "targets": {"server_id": target, "volumes": volumes}}}})

    # the mapping alone is wrong: the rule's code
    assert post(item["checkpoint_id"], item["id"]).json()["error_code"] == "CSBS.6017"
    unknown = "00000000-0000-4000-8000-00000000dead"
    r = post(unknown, item["id"])
    assert (r.status_code, r.json()) == (404, {"error_code": "CSBS.3001",
                                               "error_msg": f"Checkpoint_item ({unknown}) is not found."})
    r = post(item["checkpoint_id"], unknown, target="no-such-server")
    assert r.status_code == 404 and r.json()["error_msg"] == f"Checkpoint_item ({unknown}) is not found."
    # an item of another checkpoint of the project
    r = post(item["checkpoint_id"], other["id"])
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001" and other["id"] in r.json()["error_msg"]
    # another project's checkpoint is unknown here
    stranger = {"X-Auth-Token": make_token("other-project", "member")}
    r = post(item["checkpoint_id"], item["id"], h=stranger, project="other-project")
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"
    # nothing was started
    assert item_of(client, headers, first["id"])["status"] == "available"
    # check_restorable: an unknown item is 3001 before the target and mapping rules
    assert _check(client, headers, unknown, "no-such-server", bogus, "OS::Cinder::Volume")["error_code"] == "CSBS.3001"
