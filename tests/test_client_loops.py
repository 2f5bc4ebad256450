"""The loops real CSBS clients run, replayed against a running opencsbs over HTTP (``live_server``, httpx):
gophertelekomcloud/golangsdk waiting for a delete and following ``*_links`` page by page, the Terraform providers'
destroy loop, the Python SDK's partial policy update, and list/count agreement on every filter."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from engine_helpers import BMS1, DB1, PROVIDER, WEB1, run_jobs
from policy_helpers import body as policy_body

from opencsbs.db.base import transaction
from opencsbs.clouds.sandbox.models import SandboxServer

#: the Terraform providers' csbs backup destroy: StateChangeConf Pending / Target
TF_PENDING, TF_TARGET = ("available", "deleting"), ("deleted",)


@pytest.fixture
def http(live_server, demo, make_token):
    with httpx.Client(base_url=f"{live_server}/v1/demo", headers={"X-Auth-Token": make_token("demo", "member")},
                      timeout=30) as c:
        yield c


def _backup(http, runtime, server, **param) -> dict:
    r = http.post(f"/providers/{PROVIDER}/resources/{server}/action", json={"protect": param})
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    r = http.get(f"/checkpoint_items/{r.json()['checkpoint']['id']}")
    assert r.status_code == 200, r.text
    return r.json()["checkpoint_item"]


def test_after_a_delete_the_backup_is_404_by_item_and_by_checkpoint_id(http, runtime):
    item = _backup(http, runtime, DB1, backup_name="gone-soon")
    assert http.delete(f"/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}").status_code == 200
    run_jobs(runtime)
    # gophertelekomcloud's WaitForBackupDelete: GET until a 404 (600 s in the SDK; the delete is done here)
    for key in ("id", "checkpoint_id"):
        r = http.get(f"/checkpoint_items/{item[key]}")
        assert r.status_code == 404, (key, r.text)
        assert r.json()["error_code"] == "CSBS.3001"
    # the record stays listable on request (docs/engine.md "Deleted backups")
    listed = http.get("/checkpoint_items", params={"status": "deleted"}).json()["checkpoint_items"]
    assert [(i["id"], i["status"]) for i in listed] == [(item["id"], "deleted")]
    assert http.get("/checkpoint_items/count", params={"status": "deleted"}).json() == {"count": 1}
    assert http.get("/checkpoint_items").json()["checkpoint_items"] == []


def test_terraform_destroy_loop_ends_deleted(http, runtime):
    item = _backup(http, runtime, WEB1, backup_name="tf-backup")
    assert http.delete(f"/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}").status_code == 200
    seen = []
    for attempt in range(10):  # waitForCSBSBackupDelete, one refresh per attempt
        r = http.get(f"/checkpoint_items/{item['checkpoint_id']}")
        if r.status_code == 404:
            seen.append("deleted")
            break
        assert r.status_code == 200, r.text
        again = http.delete(f"/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}")
        if again.status_code == 400:  # the provider reads a 400 as "deleting"
            assert again.json() == {"error_code": "CSBS.2003", "error_msg": "item in executing"}
            state = "deleting"
        else:
            assert again.status_code == 200, again.text
            state = r.json()["checkpoint_item"]["status"]
        assert state in TF_PENDING + TF_TARGET, f"Terraform gives up on unexpected state {state!r}"
        seen.append(state)
        # the status the client reads while the delete waits is one it retries on
        assert r.json()["checkpoint_item"]["status"] in TF_PENDING
        if attempt >= 1:
            run_jobs(runtime)  # the delete runs after the client has polled it waiting
    assert seen[0] == "deleting" and seen[-1] == "deleted", seen
    assert run_jobs(runtime) == 0  # the repeated DELETEs queued nothing


def _set_ip(runtime, server_id: str, private_ip: str, eip: str) -> None:
    with transaction(runtime.sessions) as session:
        server = session.get(SandboxServer, server_id)
        server.flavor = {**(server.flavor or {}), "private_ip": private_ip, "eip": eip}


@pytest.fixture
def mixed(http, runtime):
    """Backups of three servers with different IPs, one of them through a policy."""
    _set_ip(runtime, WEB1, "192.168.0.10", "80.158.1.10")
    _set_ip(runtime, DB1, "192.168.0.20", "")
    items = [
        _backup(http, runtime, WEB1, backup_name="alpha-web"),
        _backup(http, runtime, DB1, backup_name="beta-db"),
        _backup(http, runtime, BMS1, backup_name="gamma-bms", resource_type="OS::Ironic::BareMetalServer"),
        _backup(http, runtime, WEB1, backup_name="delta-web"),
    ]
    r = http.post("/policies", json=policy_body(name="loop-policy", resources=(DB1,)))
    assert r.status_code == 200, r.text
    policy_id = r.json()["policy"]["id"]
    r = http.post(f"/providers/{PROVIDER}/checkpoints",
                  json={"checkpoint": {"plan_id": policy_id, "parameters": {"auto_trigger": False}}})
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    listed = http.get("/checkpoint_items").json()["checkpoint_items"]
    items.append(next(i for i in listed if i["checkpoint_id"] == r.json()["checkpoint"]["id"]))
    assert http.delete(f"/providers/{PROVIDER}/checkpoints/{items[1]['checkpoint_id']}").status_code == 200
    run_jobs(runtime)
    return items, policy_id


FILTERS = {
    "status": lambda items, pid: {"status": "deleted"},
    "name": lambda items, pid: {"name": "web"},
    "az": lambda items, pid: {"az": items[0]["extend_info"]["resource_az"]},
    "resource_id": lambda items, pid: {"resource_id": WEB1},
    "resource_name": lambda items, pid: {"resource_name": "db"},
    "resource_type": lambda items, pid: {"resource_type": "OS::Ironic::BareMetalServer"},
    "start_time": lambda items, pid: {"start_time": items[2]["created_at"]},
    "end_time": lambda items, pid: {"end_time": items[2]["created_at"]},
    "image_type": lambda items, pid: {"image_type": "backup"},
    "policy_id": lambda items, pid: {"policy_id": pid},
    "checkpoint_id": lambda items, pid: {"checkpoint_id": items[3]["checkpoint_id"]},
    "ip (private)": lambda items, pid: {"ip": "192.168.0.10"},
    "ip (eip)": lambda items, pid: {"ip": "80.158.1.10"},
    "ip (other)": lambda items, pid: {"ip": "192.168.0.20", "status": "deleted"},
    "all filters at once": lambda items, pid: {"name": "a", "resource_id": WEB1, "ip": "192.168.0.10",
                                               "image_type": "backup", "az": "az1"},
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_agrees_between_list_and_count(http, mixed, name):
    items, policy_id = mixed
    params = FILTERS[name](items, policy_id)
    listed = http.get("/checkpoint_items", params=params)
    counted = http.get("/checkpoint_items/count", params=params)
    assert listed.status_code == counted.status_code == 200, (listed.text, counted.text)
    names = [i["name"] for i in listed.json()["checkpoint_items"]]
    everything = http.get("/checkpoint_items/count").json()["count"]
    assert counted.json()["count"] == len(names), (params, names)
    assert 0 < len(names) < everything + 1, (params, names)  # the filter selects something real
    if "ip" in params:
        want = {"192.168.0.10": {"alpha-web", "delta-web"}, "80.158.1.10": {"alpha-web", "delta-web"},
                "192.168.0.20": {"beta-db"}}[params["ip"]]
        assert set(names) <= want and names, names


def _go_pager(http: httpx.Client, url: str, key: str, params: dict) -> tuple[list[str], int, dict]:
    """golangsdk's LinkedPageBase: request a page, extract its items, follow ``<key>_links`` rel=next until
    there is none (or a page is empty)."""
    ids: list[str] = []
    pages = 0
    last: dict = {}
    r = http.get(url, params=params)
    while True:
        assert r.status_code == 200, r.text
        last = r.json()
        pages += 1
        page = last[key]
        if not page:
            break
        ids += [p["id"] for p in page]
        nxt = [link["href"] for link in last.get(f"{key}_links") or [] if link.get("rel") == "next"]
        if not nxt:
            break
        assert pages < 50
        r = http.get(nxt[0])  # an absolute URL, as ExtractNextURL returns it
    return ids, pages, last


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 6])
def test_go_pager_gets_every_checkpoint_item_once(http, mixed, limit):
    everything = [i["id"] for i in http.get("/checkpoint_items").json()["checkpoint_items"]]
    assert len(everything) == 4
    ids, pages, last = _go_pager(http, "/checkpoint_items", "checkpoint_items", {"limit": limit, "name": "a"})
    wanted = [i["id"] for i in http.get("/checkpoint_items", params={"name": "a"}).json()["checkpoint_items"]]
    assert ids == wanted and len(set(ids)) == len(ids)
    assert pages == -(-len(wanted) // limit)  # never an extra empty page
    assert "checkpoint_items_links" not in last
    first = http.get("/checkpoint_items", params={"limit": limit, "name": "a"}).json()
    if len(wanted) > limit:
        link = first["checkpoint_items_links"]
        assert [x["rel"] for x in link] == ["next"]
        query = parse_qs(urlsplit(link[0]["href"]).query)
        assert query["marker"] == [first["checkpoint_items"][-1]["id"]] and query["limit"] == [str(limit)]
        assert query["name"] == ["a"]


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_go_pager_gets_every_policy_once(http, limit):
    for n in range(4):
        r = http.post("/policies", json=policy_body(name=f"paged-{n}", resources=()))
        assert r.status_code == 200, r.text
    everything = [p["id"] for p in http.get("/policies").json()["policies"]]
    ids, pages, last = _go_pager(http, "/policies", "policies", {"limit": limit})
    assert ids == everything and len(set(ids)) == 4
    assert pages == -(-4 // limit)
    assert "policies_links" not in last


def test_partial_policy_update_keeps_the_keys_left_out(http):
    definition = {"max_backups": 20, "retention_duration_days": 30, "day_backups": 3, "week_backups": 2,
                  "month_backups": 1, "year_backups": 1, "timezone": "UTC+08:00"}
    r = http.post("/policies", json=policy_body(name="partial", resources=(), **definition))
    assert r.status_code == 200, r.text
    policy = r.json()["policy"]
    op_id = policy["scheduled_operations"][0]["id"]

    def update(op_def: dict) -> dict:
        r = http.put(f"/policies/{policy['id']}", json={"policy": {"scheduled_operations": [
            {"id": op_id, "operation_definition": op_def}]}})
        assert r.status_code == 200, r.text
        shown = http.get(f"/policies/{policy['id']}").json()["policy"]["scheduled_operations"][0]
        return {k: v for k, v in shown["operation_definition"].items() if k not in ("plan_id", "provider_id")}

    # the Python SDK sends the changed key only
    assert update({"max_backups": 5}) == {**definition, "max_backups": 5}
    # Terraform sends the whole definition: exactly what it sends
    whole = {"max_backups": 7, "retention_duration_days": 10, "day_backups": 4, "week_backups": 3,
             "month_backups": 2, "year_backups": 2, "timezone": "UTC+01:00"}
    assert update(whole) == whole
    # null removes a key; day_backups alone is validated against the stored timezone
    assert update({"week_backups": None, "day_backups": 9}) == {
        k: v for k, v in {**whole, "day_backups": 9}.items() if k != "week_backups"}


@pytest.mark.parametrize(("method", "path", "serves"), [
    ("DELETE", "/policies", {"GET", "HEAD", "POST"}),
    ("PATCH", "/policies", {"GET", "HEAD", "POST"}),
    ("POST", "/policies/some-id", {"GET", "HEAD", "PUT", "DELETE"}),
    ("POST", "/checkpoint_items", {"GET", "HEAD"}),
    ("PUT", f"/providers/{PROVIDER}/checkpoints/cp", {"DELETE"}),
])
def test_405_allow_lists_every_method_of_the_path(http, method, path, serves):
    r = http.request(method, path)
    assert r.status_code == 405, r.text
    assert r.json()["error_code"] == "APIGW.0101"
    assert {m.strip() for m in r.headers["Allow"].split(",")} == serves
