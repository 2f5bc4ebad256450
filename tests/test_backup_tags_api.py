"""The tag calls of backups (``/v1/{project_id}/csbs_backup/...``) on real checkpoint_items."""

from __future__ import annotations

import pytest

from engine_helpers import protect, run_jobs
from policy_helpers import DB1, WEB1

BASE = "/v1/demo/csbs_backup"


@pytest.fixture
def two_backups(demo, runtime):
    client, headers = demo
    ids = []
    for server, name, tags in ((WEB1, "web-bk", [{"key": "env", "value": "prod"}]), (DB1, "db-bk", None)):
        param = {"backup_name": name}
        if tags:
            param["tags"] = tags
        r = protect(client, headers, server, **param)
        assert r.status_code == 200, r.text
        cp = r.json()["checkpoint"]["id"]
        run_jobs(runtime)
        items = client.get("/v1/demo/checkpoint_items", params={"checkpoint_id": cp}, headers=headers).json()
        ids.append(items["checkpoint_items"][0]["id"])
    return client, headers, ids


def test_backup_tags_follow_protect_and_show_in_the_backup(two_backups):
    client, headers, (web, db) = two_backups
    assert client.get(f"{BASE}/{web}/tags", headers=headers).json() == {"tags": [{"key": "env", "value": "prod"}]}
    assert client.get(f"{BASE}/{db}/tags", headers=headers).json() == {"tags": []}
    r = client.post(f"{BASE}/{db}/tags", json={"tag": {"key": "env", "value": "dev"}}, headers=headers)
    assert r.status_code == 204
    shown = client.get(f"/v1/demo/checkpoint_items/{db}", headers=headers).json()["checkpoint_item"]
    assert shown["tags"] == [{"key": "env", "value": "dev"}]
    assert client.get(f"{BASE}/tags", headers=headers).json() == {"tags": [{"key": "env", "values": ["dev", "prod"]}]}
    r = client.post(f"{BASE}/{db}/tags/action", headers=headers,
                    json={"action": "create", "tags": [{"key": f"k{i}", "value": "v"} for i in range(10)]})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.7000"
    assert client.delete(f"{BASE}/{db}/tags/env", headers=headers).status_code == 204
    r = client.delete(f"{BASE}/{db}/tags/env", headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.7001"
    r = client.get(f"{BASE}/00000000-0000-0000-0000-000000000000/tags", headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"


def test_query_backups_by_tag_with_details(two_backups):
    client, headers, (web, db) = two_backups
    r = client.post(f"{BASE}/resource_instances/action", headers=headers,
                    json={"action": "filter", "tags": [{"key": "env", "values": ["prod"]}]})
    assert r.status_code == 200
    res = r.json()
    assert res["total_count"] == 1
    hit = res["resources"][0]
    assert hit["resource_id"] == web and hit["resource_name"] == "web-bk"
    assert hit["tags"] == [{"key": "env", "value": "prod"}]
    detail = hit["resource_detail"]
    assert detail["id"] == web and detail["status"] == "available" and detail["resource_id"] == WEB1
    assert detail["tags"] == hit["tags"] and "extend_info" in detail
    r = client.post(f"{BASE}/resource_instances/action", headers=headers,
                    json={"action": "count", "not_tags_any": [{"key": "env", "values": []}]})
    assert r.json() == {"total_count": 1}
    r = client.post(f"{BASE}/resource_instances/action", headers=headers,
                    json={"action": "filter", "matches": [{"key": "resource_name", "value": "db"}]})
    assert [x["resource_id"] for x in r.json()["resources"]] == [db]


def test_deleted_backups_are_gone_for_tags(two_backups, runtime):
    client, headers, (web, _db) = two_backups
    item = client.get(f"/v1/demo/checkpoint_items/{web}", headers=headers).json()["checkpoint_item"]
    from engine_helpers import PROVIDER

    r = client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}", headers=headers)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    assert client.get(f"{BASE}/{web}/tags", headers=headers).status_code == 404
    assert client.get(f"{BASE}/tags", headers=headers).json() == {"tags": []}
