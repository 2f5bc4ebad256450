"""Every policy, execution and tag call's answer (and the successful requests) conform to the server's own
/openapi.json, checked with openapi-core."""

from __future__ import annotations

from engine_helpers import protect, run_jobs
from openapi_check import Contract
from policy_helpers import DB1, PROVIDER, WEB1, body


def test_policy_and_tag_exchanges_match_openapi(demo, runtime):
    client, headers = demo
    contract = Contract(client.get("/openapi.json").json())

    def call(method, url, request_too=True, **kw):
        r = client.request(method, url, headers=headers, **kw)
        contract.check(r, request_too=request_too and r.status_code < 400)
        return r

    b = body("contract", resources=(WEB1,), max_backups=3, day_backups=2, timezone="UTC+01:00")
    b["policy"]["tags"] = [{"key": "env", "value": "prod"}]
    p = call("POST", "/v1/demo/policies", json=b).json()["policy"]
    call("POST", "/v1/demo/policies", json=b)  # 400 CSBS.9007
    call("GET", f"/v1/demo/policies/{p['id']}")
    call("GET", "/v1/demo/policies/nope")
    call("POST", "/v1/demo/policies", json=body("second", resources=()))
    call("GET", "/v1/demo/policies", params={"limit": 1, "sort": "name:asc"})
    op = p["scheduled_operations"][0]["id"]
    call("PUT", f"/v1/demo/policies/{p['id']}",
         json={"policy": {"name": "renamed", "scheduled_operations": [{"id": op, "enabled": False}]}})
    call("POST", f"/v1/demo/providers/{PROVIDER}/checkpoints",
         json={"checkpoint": {"plan_id": p["id"], "parameters": {"auto_trigger": False}}})
    call("POST", f"/v1/demo/providers/{PROVIDER}/checkpoints",
         json={"checkpoint": {"plan_id": p["id"], "parameters": {}}})  # 500 CSBS.1001
    run_jobs(runtime)
    assert protect(client, headers, DB1, backup_name="bk").status_code == 200
    run_jobs(runtime)
    item = client.get("/v1/demo/checkpoint_items", params={"resource_id": DB1}, headers=headers)
    item_id = item.json()["checkpoint_items"][0]["id"]
    for prefix, rid in (("csbs_backup_policy", p["id"]), ("csbs_backup", item_id)):
        base = f"/v1/demo/{prefix}"
        call("POST", f"{base}/{rid}/tags", json={"tag": {"key": "team", "value": "a"}})
        call("POST", f"{base}/{rid}/tags/action", json={"action": "create", "tags": [{"key": "x", "value": "1"}]})
        call("POST", f"{base}/{rid}/tags/action", json={"action": "delete", "tags": [{"key": "x"}]})
        call("GET", f"{base}/{rid}/tags")
        call("GET", f"{base}/tags")
        call("POST", f"{base}/resource_instances/action", json={"action": "filter", "tags": [
            {"key": "team", "values": ["a"]}]})
        call("POST", f"{base}/resource_instances/action", json={"action": "count"})
        call("DELETE", f"{base}/{rid}/tags/team")
        call("DELETE", f"{base}/{rid}/tags/team")  # 404 CSBS.7001
    call("DELETE", f"/v1/demo/policies/{p['id']}")
