"""The real client, huaweicloud-sdk-python 1.0.28 (``openstack.csbs.v1``), backs up a server, finds the backup by
checkpoint id (list filter and single GET, as real clients do), counts, checks restorability and deletes it, over
HTTP against a running opencsbs (needs ``scripts/services/sdk.sh start``)."""

from __future__ import annotations

import pytest

from engine_helpers import DB1, DB1_SYS, MIB, PROVIDER, random_bytes, run_jobs, write

pytestmark = pytest.mark.sdk

PROTECT = """
import json, os
from openstack import connection
from openstack.csbs.v1 import resource as csbs_resource

conn = connection.Connection(auth_token=os.environ["TOKEN"], auth_url="http://127.0.0.1:9/v3")
backup = csbs_resource.ResourceBackup.new(provider_id=os.environ["PROVIDER"], resource_id=os.environ["SERVER"],
                                          protect={"backup_name": "sdk-backup", "description": "from the sdk"})
cp = backup.create(conn.session, prepend_key=False)
items = [i.to_dict() for i in conn.csbs.checkpoint_items(checkpoint_id=cp.id)]
print(json.dumps({"checkpoint": {"id": cp.id, "status": cp.status, "plan": cp.protection_plan}, "items": items}))
"""

AFTER = """
import json, os
from openstack import connection
from openstack.csbs.v1 import resource as csbs_resource

conn = connection.Connection(auth_token=os.environ["TOKEN"], auth_url="http://127.0.0.1:9/v3")
cp_id = os.environ["CHECKPOINT"]
by_checkpoint = conn.csbs.get_checkpoint_item(cp_id)
item = conn.csbs.get_checkpoint_item(by_checkpoint.id)
count = conn.csbs.get_checkpoint_item_count(status="available")
vbs = item.extend_info["volume_backups"]
check = csbs_resource.ResourceRecoveryCapability.new(provider_id=os.environ["PROVIDER"], check_restorable=[{
    "checkpoint_item_id": item.id,
    "target": {"resource_id": item.resource_id, "resource_type": "OS::Nova::Server",
               "volumes": [{"backup_id": v["id"], "volume_id": v["source_volume_id"]} for v in vbs]}}])
verdicts = check.create(conn.session, prepend_key=False).restorable
conn.csbs.delete_checkpoint(cp_id, os.environ["PROVIDER"])
after = conn.csbs.get_checkpoint_item(item.id)
print(json.dumps({"same": by_checkpoint.id == item.id, "status": item.status, "name": item.name,
                  "extend_info": item.extend_info, "count": getattr(count, "count", None),
                  "restorable": verdicts, "after_delete": after.status}))
"""


def test_sdk_backup_list_get_check_delete(live_server, inventory, runtime, make_token, sdk_run):
    write(runtime, DB1_SYS, 0, random_bytes(6 * MIB, 11))
    env = {"TOKEN": make_token("demo", "member"), "PROVIDER": PROVIDER, "SERVER": DB1,
           "OS_DATA_PROTECT_ENDPOINT_OVERRIDE": f"{live_server}/v1/demo"}
    out = sdk_run(PROTECT, **env).json
    assert out["checkpoint"]["status"] == "protecting"
    assert out["checkpoint"]["plan"]["resources"][0]["id"] == DB1
    assert [i["name"] for i in out["items"]] == ["sdk-backup"]  # listed the moment protect returned
    assert out["items"][0]["status"] == "protecting"

    run_jobs(runtime)
    got = sdk_run(AFTER, CHECKPOINT=out["checkpoint"]["id"], **env).json
    assert got["same"] is True
    assert (got["status"], got["name"]) == ("available", "sdk-backup")
    assert got["extend_info"]["progress"] == 100 and got["extend_info"]["volume_backups"][0]["source_volume_id"] \
        == DB1_SYS
    assert got["count"] == 1
    assert got["restorable"][0]["result"] is True, got["restorable"]
    assert got["after_delete"] == "deleting"
    run_jobs(runtime)
    assert runtime.bank.list_indexes("checkpoints/") == []
