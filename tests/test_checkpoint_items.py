"""checkpoint_items: every filter, sort, marker, limit, offset, all_tenants, count, show; delete lifecycle; quotas."""

from __future__ import annotations

import time

import pytest

from engine_helpers import BMS1, DB1, PROVIDER, WEB1, item_of, protect, run_jobs
from opencsbs.core.timeutil import utcnow, wire_ts

OTHER = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"


def _backup(client, headers, server, run=True, project="demo", **param):
    r = protect(client, headers, server, project=project, **param)
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]
    if run:
        run_jobs(client.app.state.runtime)
    return item_of(client, headers, cp["id"], project=project)


@pytest.fixture
def five(demo, make_token):
    """Five backups of three servers (and one of another project), created in this order."""
    client, headers = demo
    other_headers = {"X-Auth-Token": make_token("other-project", "member")}
    _backup(client, other_headers, OTHER, project="other-project", backup_name="theirs")
    items = [
        _backup(client, headers, WEB1, backup_name="alpha-web"),
        _backup(client, headers, DB1, backup_name="beta-db", description="second"),
        _backup(client, headers, BMS1, backup_name="gamma_bms", resource_type="OS::Ironic::BareMetalServer"),
        _backup(client, headers, WEB1, backup_name="delta-web", tags=[{"key": "env", "value": "prod"}]),
        _backup(client, headers, DB1, run=False, backup_name="eps-db"),  # still protecting
    ]
    return client, headers, items


def _list(client, headers, **params):
    r = client.get("/v1/demo/checkpoint_items", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return [i["name"] for i in r.json()["checkpoint_items"]]


def _count(client, headers, **params):
    r = client.get("/v1/demo/checkpoint_items/count", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["count"]


def test_filters(five):
    client, headers, items = five
    assert _list(client, headers) == ["eps-db", "delta-web", "gamma_bms", "beta-db", "alpha-web"]
    assert _count(client, headers) == 5
    cases = {
        (("status", "protecting"),): ["eps-db"],
        (("status", "available"),): ["delta-web", "gamma_bms", "beta-db", "alpha-web"],
        (("status", "error"),): [],
        (("name", "web"),): ["delta-web", "alpha-web"],
        (("name", "_"),): ["gamma_bms"],  # fuzzy match, '_' is literal
        (("name", "%"),): [],
        (("resource_id", WEB1),): ["delta-web", "alpha-web"],
        (("resource_name", "db-"),): ["eps-db", "beta-db"],
        (("resource_type", "OS::Ironic::BareMetalServer"),): ["gamma_bms"],
        (("az", "az1"),): ["eps-db", "delta-web", "gamma_bms", "beta-db", "alpha-web"],
        (("az", "az2"),): [],
        (("image_type", "backup"),): ["eps-db", "delta-web", "gamma_bms", "beta-db", "alpha-web"],
        (("image_type", "image"),): [],
        (("policy_id", "0c9b4a9c-8a0c-4f1e-8d7b-6a1f2f3e4d5c"),): [],
        (("checkpoint_id", items[1]["checkpoint_id"]),): ["beta-db"],
        (("start_time", items[2]["created_at"]),): ["eps-db", "delta-web", "gamma_bms"],
        (("end_time", items[1]["created_at"]),): ["beta-db", "alpha-web"],
        (("start_time", items[1]["created_at"]), ("end_time", items[3]["created_at"])):
            ["delta-web", "gamma_bms", "beta-db"],
        (("name", "web"), ("status", "available"), ("resource_id", WEB1)): ["delta-web", "alpha-web"],
    }
    for params, expected in cases.items():
        assert _list(client, headers, **dict(params)) == expected, params
        assert _count(client, headers, **dict(params)) == len(expected), params


def test_sort_limit_marker_offset(five):
    client, headers, items = five
    assert _list(client, headers, sort="name:asc") == ["alpha-web", "beta-db", "delta-web", "eps-db", "gamma_bms"]
    assert _list(client, headers, sort="name") == ["gamma_bms", "eps-db", "delta-web", "beta-db", "alpha-web"]
    assert _list(client, headers, sort="created_at:asc") == ["alpha-web", "beta-db", "gamma_bms", "delta-web",
                                                             "eps-db"]
    assert _list(client, headers, sort="status:asc,name:desc") == ["gamma_bms", "delta-web", "beta-db",
                                                                   "alpha-web", "eps-db"]
    # protected_at: the one still protecting has none and sorts last descending
    assert _list(client, headers, sort="protected_at:desc")[-1] == "eps-db"
    by_id = sorted(items, key=lambda i: i["id"])
    assert _list(client, headers, sort="id:asc") == [i["name"] for i in by_id]
    assert _list(client, headers, limit=2) == ["eps-db", "delta-web"]
    assert _list(client, headers, offset=3) == ["beta-db", "alpha-web"]
    assert _list(client, headers, offset=1, limit=2) == ["delta-web", "gamma_bms"]
    # marker paging walks every sort order exactly once
    for sort in ("name:asc", "status:asc,name:desc", "created_at:desc", "updated_at:asc", "protected_at:asc,id:desc"):
        full = _list(client, headers, sort=sort)
        seen, marker = [], None
        while True:
            params = {"sort": sort, "limit": 2}
            if marker:
                params["marker"] = marker
            r = client.get("/v1/demo/checkpoint_items", params=params, headers=headers)
            page = r.json()["checkpoint_items"]
            if not page:
                break
            seen += [i["name"] for i in page]
            marker = page[-1]["id"]
        assert seen == full, sort
    assert _list(client, headers, marker=items[0]["id"]) == []  # the oldest is last in the default order
    assert _list(client, headers, marker=items[2]["id"], sort="name:asc") == []
    assert _list(client, headers, marker=items[2]["id"], sort="name:asc", offset=0) == []


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": -1}, {"limit": "x"}, {"offset": -1}, {"sort": "size:asc"}, {"sort": "name:up"},
    {"sort": "name,name"}, {"marker": "no-such-item"}, {"status": "sleeping"}, {"start_time": "yesterday"},
    {"end_time": "2017-13-40T00:00:00"}, {"all_tenants": "maybe"},
])
def test_bad_query_parameters_are_400(demo, params):
    client, headers = demo
    r = client.get("/v1/demo/checkpoint_items", params=params, headers=headers)
    assert r.status_code == 400, (params, r.text)
    assert r.json()["error_code"] == "CSBS.9001"


@pytest.mark.parametrize("path", ["/v1/demo/checkpoint_items", "/v1/demo/policies", "/v1/demo/providers",
                                  "/opencsbs/v1/demo/servers", "/opencsbs/v1/demo/lock_audit"])
def test_every_marker_paged_list_refuses_an_unknown_marker_alike(demo, path):
    """One answer on every list that pages with ``marker`` (core.listing.page_anchor): an id the list does not
    have is 400 CSBS.9001 naming the marker, not a 200 with an empty page."""
    client, headers = demo
    r = client.get(path, params={"marker": "99999"}, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"error_code": "CSBS.9001", "error_msg": "Invalid request parameters: marker 99999 not found"}


def test_a_marker_of_another_projects_backup_is_unknown(five, make_token):
    client, headers, _ = five
    other = {"X-Auth-Token": make_token("other-project", "member")}
    theirs = client.get("/v1/other-project/checkpoint_items", headers=other).json()["checkpoint_items"]
    assert [i["name"] for i in theirs] == ["theirs"]
    r = client.get("/v1/demo/checkpoint_items", params={"marker": theirs[0]["id"]}, headers=headers)
    assert r.status_code == 400
    assert r.json()["error_msg"] == f"Invalid request parameters: marker {theirs[0]['id']} not found"


def test_all_tenants_is_for_cloud_admins(five, make_token):
    client, headers, _ = five
    r = client.get("/v1/demo/checkpoint_items", params={"all_tenants": "true"}, headers=headers)
    assert r.status_code == 403
    project_admin = {"X-Auth-Token": make_token("demo", "admin")}
    r = client.get("/v1/demo/checkpoint_items", params={"all_tenants": "true"}, headers=project_admin)
    assert r.status_code == 403
    admin = {"X-Auth-Token": make_token(None, "cloud-admin")}
    assert "theirs" in _list(client, admin, all_tenants="true")
    assert "theirs" not in _list(client, admin)
    assert _count(client, admin, all_tenants="1") == 6
    assert _count(client, admin) == 5


def test_show_by_item_or_checkpoint_id(five, make_token):
    client, headers, items = five
    item = items[3]
    for ident in (item["id"], item["checkpoint_id"]):
        r = client.get(f"/v1/demo/checkpoint_items/{ident}", headers=headers)
        assert r.status_code == 200
        got = r.json()["checkpoint_item"]
        assert got["id"] == item["id"] and got["tags"] == [{"key": "env", "value": "prod"}]
    r = client.get("/v1/demo/checkpoint_items/5f8b0c3e-0000-4000-8000-000000000000", headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"
    assert client.get("/v1/demo/checkpoint_items",
                      headers={"X-Auth-Token": make_token("other-project", "reader")}).status_code == 403
    # another project's backup is not visible from demo
    r = client.get("/v1/other-project/checkpoint_items", headers={"X-Auth-Token": make_token("other-project")})
    other_id = r.json()["checkpoint_items"][0]["id"]
    assert client.get(f"/v1/demo/checkpoint_items/{other_id}", headers=headers).status_code == 404


def test_item_wire_shape(five):
    client, headers, items = five
    item = items[0]
    assert set(item) >= {"id", "name", "checkpoint_id", "resource_id", "resource_type", "status", "created_at",
                         "updated_at", "description", "tags", "backup_data", "extend_info"}
    ext = item["extend_info"]
    assert set(ext) >= {"auto_trigger", "average_speed", "copy_from", "copy_status", "fail_code", "fail_op",
                        "fail_reason", "image_type", "incremental", "progress", "resource_az", "resource_name",
                        "resource_type", "size", "space_saving_ratio", "volume_backups", "finished_at",
                        "supported_restore_mode", "support_lld", "taskid", "hypervisor_type"}
    assert ext["fail_code"] == {} and ext["copy_status"] == "na" and ext["hypervisor_type"] == "QEMU"
    assert ext["resource_name"] == "web-1" and ext["resource_az"] == "az1"
    vb = ext["volume_backups"][0]
    assert set(vb) >= {"id", "name", "status", "bootable", "average_speed", "image_type", "incremental", "size",
                       "source_volume_id", "source_volume_size", "source_volume_name", "space_saving_ratio",
                       "snapshot_id"}
    assert vb["name"] == "alpha-web_web-1-sys" and vb["source_volume_size"] == 1
    assert item["backup_data"]["vcpus"] == 2 and item["backup_data"]["ram"] == 2048
    assert len(item["created_at"]) == len("2017-04-18T01:21:52.701973")


def test_protect_refusals(demo, runtime):
    client, headers = demo
    cases = {
        "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003": "CSBS.6006",
        "4dab5e4c-8a2c-4d90-9c73-5e8d6d4e0005": "CSBS.6001",
        "5ebc6f5d-9b3d-4ea1-8d84-6f9e7e5f0006": "CSBS.6007",
        "6fcd7a6e-ac4e-4fb2-9e95-7a0f8f6a0007": "CSBS.6010",
        "7ade8b7f-bd5f-40c3-8fa6-8b1a9a7b0008": "CSBS.6033",
        "8bef9c8a-ce6a-41d4-9ab7-9c2babac0009": "CSBS.6027",
        OTHER: "CSBS.6000",
    }
    for server, code in cases.items():
        r = protect(client, headers, server)
        assert r.status_code == 400 and r.json()["error_code"] == code, (server, r.text)
    assert protect(client, headers, WEB1).status_code == 200
    r = protect(client, headers, WEB1)  # one job per server at a time
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6005"
    for bad in ({"backup_name": "bad name!"}, {"description": "<b>"}, {"tags": []},
                {"tags": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]}, {"incremental": "yes"},
                {"tags": [{"key": "", "value": "x"}]}):
        r = protect(client, headers, DB1, **bad)
        assert r.status_code == 400, (bad, r.text)
    r = protect(client, headers, DB1, tags=[{"key": f"k{i}", "value": "v"} for i in range(11)])
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.7000"
    r = client.post(f"/v1/demo/providers/not-the-provider/resources/{DB1}/action", json={"protect": {}},
                    headers=headers)
    assert r.status_code == 400
    run_jobs(runtime)


def test_delete_lifecycle(demo, runtime):
    from engine_helpers import DB1_SYS, MIB, random_bytes, write

    client, headers = demo
    write(runtime, DB1_SYS, 0, random_bytes(5 * MIB, 9))
    item = _backup(client, headers, DB1)
    name = f"checkpoints/{item['checkpoint_id']}/{item['extend_info']['volume_backups'][0]['id']}"
    assert runtime.bank.read_index(name).size > 0
    url = f"/v1/demo/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}"
    r = client.delete(url, headers=headers)
    assert r.status_code == 200 and r.json() == {}
    assert client.get(f"/v1/demo/checkpoint_items/{item['id']}", headers=headers).json()["checkpoint_item"][
        "status"] == "deleting"
    for _ in range(3):  # repeated deletes while deleting: 400 CSBS.2003 "item in executing", never 5xx
        r = client.delete(url, headers=headers)
        assert r.status_code == 400 and r.json()["error_code"] == "CSBS.2003", r.text
    assert run_jobs(runtime) == 1
    from opencsbs.bank import IndexNotFound

    with pytest.raises(IndexNotFound):
        runtime.bank.read_index(name)
    assert _list(client, headers) == []
    assert _list(client, headers, status="deleted") == [item["name"]]
    r = client.delete(url, headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"
    assert client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/nope", headers=headers).status_code == 404
    # deleting a backup still being made is refused, not half-done
    busy = _backup(client, headers, DB1, run=False)
    r = client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/{busy['checkpoint_id']}", headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.2003"
    run_jobs(runtime)
    # ?checkpoint_items= with an unknown id is 404, with the right id deletes it
    base = f"/v1/demo/providers/{PROVIDER}/checkpoints/{busy['checkpoint_id']}"
    assert client.delete(base, params={"checkpoint_items": "nope"}, headers=headers).status_code == 404
    assert client.delete(base, params={"checkpoint_items": busy["id"]}, headers=headers).status_code == 200
    run_jobs(runtime)
    assert _count(client, headers, status="deleted") == 2
    assert runtime.bank.list_indexes("checkpoints/") == []  # every index dropped: GC reclaims the chunks
    report = runtime.bank.gc(grace_seconds=0)
    assert report.skipped_reason is None and report.deleted_chunks > 0
    assert runtime.bank.verify().ok


def test_quotas(demo, runtime, make_token):
    client, headers = demo
    r = client.get("/v1/demo/quotas", headers=headers)
    assert r.status_code == 200
    res = {q["type"]: q for q in r.json()["quotas"]["resources"]}
    assert res["backups"] == {"type": "backups", "quota": 600, "used": 0}
    assert res["backup_capacity"] == {"type": "backup_capacity", "unit": "GB", "quota": -1, "used": 0}
    runtime.settings.quotas.projects["demo"] = {"backups": 2}
    _backup(client, headers, DB1)
    _backup(client, headers, WEB1)
    r = protect(client, headers, BMS1, resource_type="OS::Ironic::BareMetalServer")
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9006"
    assert "backups" in r.json()["error_msg"]
    res = {q["type"]: q for q in client.get("/v1/demo/quotas", headers=headers).json()["quotas"]["resources"]}
    assert res["backups"]["used"] == 2 and res["backups"]["quota"] == 2
    # capacity: any stored byte uses up a 0 GB quota
    runtime.settings.quotas.projects["demo"] = {"backups": 10, "backup_capacity_gb": 0}
    r = protect(client, headers, DB1)
    assert r.status_code == 400 and r.json()["error_msg"].endswith("backup_capacity")
    runtime.settings.quotas.projects["demo"] = {"backups": 10, "backup_capacity_gb": 1}
    assert protect(client, headers, DB1).status_code == 200
    run_jobs(runtime)
