"""The real client, huaweicloud-sdk-python 1.0.28: its ``openstack.csbs.v1.policy.Policy`` resource (create, get,
list with marker, update, delete) and ``create_checkpoint`` against a running opencsbs (needs
``scripts/services/sdk.sh start``)."""

from __future__ import annotations

import pytest

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
DB_1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
PATTERN = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"

pytestmark = pytest.mark.sdk

PRELUDE = """
import json, os, sys
from openstack import connection, exceptions
from openstack.csbs.v1 import policy as _policy

conn = connection.Connection(auth_token=os.environ["TOKEN"], auth_url="http://127.0.0.1:9/v3")
session = conn.session

def spec(name, servers):
    return dict(
        name=name, description="made by the SDK", provider_id=os.environ["PROVIDER"], parameters={"common": {}},
        resources=[{"id": s, "type": "OS::Nova::Server", "name": "srv"} for s in servers],
        scheduled_operations=[{"name": "weekly", "description": "", "enabled": True, "operation_type": "backup",
                               "operation_definition": {"max_backups": 5, "permanent": False},
                               "trigger": {"properties": {"pattern": os.environ["PATTERN"]}}}],
    )

def shown(p):
    return {"id": p.id, "name": p.name, "status": p.status, "description": p.description,
            "resources": p.resources, "scheduled_operations": p.scheduled_operations,
            "created_at": p.created_at, "project_id": p.project_id, "provider_id": p.provider_id}
"""

LIFECYCLE = PRELUDE + """
out = {}
created = _policy.Policy.new(**spec("sdk-policy", [os.environ["WEB"]])).create(session)
out["created"] = shown(created)
out["got"] = shown(_policy.Policy.new(id=created.id).get(session))
for i in range(3):
    _policy.Policy.new(**spec(f"sdk-extra-{i}", [])).create(session)
pages = list(_policy.Policy.list(session, paginated=True, limit=2, sort="created_at:asc"))
out["listed"] = [p.name for p in pages]
first = list(_policy.Policy.list(session, paginated=False, limit=2, sort="created_at:asc"))
out["after_marker"] = [p.name for p in _policy.Policy.list(session, marker=first[-1].id, sort="created_at:asc")]
upd = _policy.Policy.new(id=created.id)
upd.name = "sdk-policy-renamed"
upd.scheduled_operations = [{"id": created.scheduled_operations[0]["id"], "enabled": False}]
upd = upd.update(session)
out["updated"] = shown(upd)
_policy.Policy.new(id=created.id).delete(session)
try:
    _policy.Policy.new(id=created.id).get(session)
    out["after_delete"] = "still there"
except exceptions.HttpException as exc:
    out["after_delete"] = exc.http_status
try:
    _policy.Policy.new(**spec("sdk-extra-0", [])).create(session)
except exceptions.HttpException as exc:
    out["duplicate"] = [exc.http_status, str(exc)]
print(json.dumps(out))
"""


def test_sdk_policy_lifecycle(live_server, inventory, make_token, sdk_run):
    out = sdk_run(LIFECYCLE, TOKEN=make_token("demo"), PROVIDER=PROVIDER, PATTERN=PATTERN, WEB=WEB_1,
                  OS_DATA_PROTECT_ENDPOINT_OVERRIDE=f"{live_server}/v1/demo").json
    created = out["created"]
    assert created["name"] == "sdk-policy" and created["status"] == "suspended"
    assert created["project_id"] == "demo" and created["provider_id"] == PROVIDER
    assert created["resources"] == [{"id": WEB_1, "type": "OS::Nova::Server", "name": "srv"}]
    op = created["scheduled_operations"][0]
    assert op["operation_definition"]["max_backups"] == "5"
    assert op["trigger"]["properties"]["pattern"] == PATTERN
    got = out["got"]
    assert got["id"] == created["id"] and got["scheduled_operations"][0]["operation_definition"]["max_backups"] == 5
    assert out["listed"] == ["sdk-policy", "sdk-extra-0", "sdk-extra-1", "sdk-extra-2"]
    assert out["after_marker"] == ["sdk-extra-1", "sdk-extra-2"]
    assert out["updated"]["name"] == "sdk-policy-renamed" and out["updated"]["status"] == "disabled"
    assert out["updated"]["scheduled_operations"][0]["enabled"] is False
    assert out["after_delete"] == 404
    assert out["duplicate"][0] == 400 and "CSBS.9007" in out["duplicate"][1]


CHECKPOINT = PRELUDE + """
created = _policy.Policy.new(**spec("sdk-run", [os.environ["WEB"], os.environ["DB"]])).create(session)
cp = conn.csbs.create_checkpoint(os.environ["PROVIDER"], plan_id=created.id,
                                 parameters={"auto_trigger": False, "resources": [os.environ["DB"]]})
out = {"id": cp.id, "status": cp.status, "plan": cp.protection_plan, "project_id": cp.project_id}
try:
    conn.csbs.create_checkpoint(os.environ["PROVIDER"], plan_id=created.id, parameters={"auto_trigger": False})
except exceptions.HttpException as exc:
    out["again"] = [exc.http_status, str(exc)]
try:
    conn.csbs.create_checkpoint(os.environ["PROVIDER"], plan_id="no-such-policy", parameters={})
except exceptions.HttpException as exc:
    out["missing"] = exc.http_status
print(json.dumps(out))
"""


def test_sdk_create_checkpoint_runs_the_policy(live_server, inventory, make_token, sdk_run, runtime):
    out = sdk_run(CHECKPOINT, TOKEN=make_token("demo"), PROVIDER=PROVIDER, PATTERN=PATTERN, WEB=WEB_1, DB=DB_1,
                  OS_DATA_PROTECT_ENDPOINT_OVERRIDE=f"{live_server}/v1/demo").json
    assert out["status"] == "protecting" and out["project_id"] == "demo"
    assert out["plan"]["name"] == "sdk-run"
    assert [r["id"] for r in out["plan"]["resources"]] == [DB_1]
    assert out["again"][0] == 500 and "CSBS.1001" in out["again"][1]
    assert out["missing"] == 404
    from opencsbs.engine.worker import drain

    drain(runtime)
