"""The tag calls of backup policies over HTTP (tag_management/*.rst): codes, statuses, rules, queries."""

from __future__ import annotations

import pytest

from policy_helpers import body, create

BASE = "/v1/demo/csbs_backup_policy"


@pytest.fixture
def policy(demo):
    client, headers = demo
    return client, headers, create(client, headers, body("tagged", resources=())).json()["policy"]["id"]


def tags_of(client, headers, pid):
    r = client.get(f"{BASE}/{pid}/tags", headers=headers)
    assert r.status_code == 200
    return r.json()["tags"]


def test_add_show_overwrite_remove(policy):
    client, headers, pid = policy
    r = client.post(f"{BASE}/{pid}/tags", json={"tag": {"key": " DEV ", "value": " DEV1 "}}, headers=headers)
    assert r.status_code == 204 and r.content == b""
    assert tags_of(client, headers, pid) == [{"key": "DEV", "value": "DEV1"}]
    client.post(f"{BASE}/{pid}/tags", json={"tag": {"key": "DEV", "value": "DEV2"}}, headers=headers)
    assert tags_of(client, headers, pid) == [{"key": "DEV", "value": "DEV2"}]
    assert client.get(f"/v1/demo/policies/{pid}", headers=headers).json()["policy"]["tags"] == \
        [{"key": "DEV", "value": "DEV2"}]
    r = client.delete(f"{BASE}/{pid}/tags/DEV", headers=headers)
    assert r.status_code == 204
    r = client.delete(f"{BASE}/{pid}/tags/DEV", headers=headers)
    assert r.status_code == 404 and r.json() == {"error_code": "CSBS.7001", "error_msg": "The backup tag does not exist."}


def test_eleventh_tag_7000(policy):
    client, headers, pid = policy
    r = client.post(f"{BASE}/{pid}/tags/action", headers=headers,
                    json={"action": "create", "tags": [{"key": f"k{i}", "value": "v"} for i in range(10)]})
    assert r.status_code == 204
    r = client.post(f"{BASE}/{pid}/tags", json={"tag": {"key": "k10", "value": "v"}}, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.7000"
    # overwriting an existing key is still fine at 10
    assert client.post(f"{BASE}/{pid}/tags", json={"tag": {"key": "k3", "value": "w"}}, headers=headers).status_code == 204
    assert len(tags_of(client, headers, pid)) == 10


def test_batch_delete_by_key_or_matching_value(policy):
    client, headers, pid = policy
    client.post(f"{BASE}/{pid}/tags/action", headers=headers,
                json={"action": "create", "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"},
                                                    {"key": "c", "value": "3"}]})
    r = client.post(f"{BASE}/{pid}/tags/action", headers=headers,
                    json={"action": "delete", "tags": [{"key": "a"}, {"key": "b", "value": "nope"},
                                                        {"key": "c", "value": "3"}, {"key": "zzz"}]})
    assert r.status_code == 204
    assert tags_of(client, headers, pid) == [{"key": "b", "value": "2"}]


@pytest.mark.parametrize("payload", [
    {"action": "create", "tags": []},
    {"action": "create"},
    {"action": "upsert", "tags": [{"key": "a", "value": "1"}]},
    {"action": "create", "tags": [{"key": "a"}]},
    {"action": "create", "tags": [{"key": "", "value": "1"}]},
    {"action": "create", "tags": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]},
    {"action": "create", "tags": [{"key": "a b", "value": "1"}]},
    {"action": "create", "tags": [{"key": "a", "value": "x" * 44}]},
    {"action": "delete", "tags": [{"key": "   "}]},
    {"action": "delete", "tags": [{"key": "k" * 128}]},
])
def test_batch_rejects(policy, payload):
    client, headers, pid = policy
    r = client.post(f"{BASE}/{pid}/tags/action", json=payload, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", r.text


def test_add_rejects_and_unknown_policy(policy):
    client, headers, pid = policy
    for bad in ({}, {"tag": "x"}, {"tag": {"key": "k" * 37, "value": ""}}, {"tag": {"key": "k", "value": "a*"}}):
        r = client.post(f"{BASE}/{pid}/tags", json=bad, headers=headers)
        assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", bad
    for method, url, kw in (
        ("post", f"{BASE}/nope/tags", {"json": {"tag": {"key": "a", "value": "b"}}}),
        ("get", f"{BASE}/nope/tags", {}),
        ("delete", f"{BASE}/nope/tags/a", {}),
        ("post", f"{BASE}/nope/tags/action", {"json": {"action": "delete", "tags": [{"key": "a"}]}}),
    ):
        r = getattr(client, method)(url, headers=headers, **kw)
        assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000", url


def test_project_tags_and_isolation(demo, make_token):
    client, headers = demo
    p1 = create(client, headers, body("p1", resources=())).json()["policy"]["id"]
    p2 = create(client, headers, body("p2", resources=())).json()["policy"]["id"]
    client.post(f"{BASE}/{p1}/tags/action", headers=headers,
                json={"action": "create", "tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": "a"}]})
    client.post(f"{BASE}/{p2}/tags/action", headers=headers,
                json={"action": "create", "tags": [{"key": "env", "value": "dev"}, {"key": "team", "value": "a"}]})
    r = client.get(f"{BASE}/tags", headers=headers)
    assert r.status_code == 200
    assert r.json() == {"tags": [{"key": "env", "values": ["dev", "prod"]}, {"key": "team", "values": ["a"]}]}
    other = {"X-Auth-Token": make_token("other")}
    assert client.get("/v1/other/csbs_backup_policy/tags", headers=other).json() == {"tags": []}
    r = client.get(f"/v1/other/csbs_backup_policy/{p1}/tags", headers=other)
    assert r.status_code == 404


def test_deleting_policy_drops_its_tags(policy):
    client, headers, pid = policy
    client.post(f"{BASE}/{pid}/tags", json={"tag": {"key": "a", "value": "b"}}, headers=headers)
    client.delete(f"/v1/demo/policies/{pid}", headers=headers)
    assert client.get(f"{BASE}/tags", headers=headers).json() == {"tags": []}


@pytest.fixture
def four(demo):
    client, headers = demo
    spec = {
        "alpha": {"env": "prod", "team": "a"},
        "beta": {"env": "dev", "team": "a"},
        "gamma": {"env": "prod"},
        "delta": {},
    }
    ids = {}
    for name, tags in spec.items():
        ids[name] = create(client, headers, body(name, resources=())).json()["policy"]["id"]
        if tags:
            client.post(f"{BASE}/{ids[name]}/tags/action", headers=headers,
                        json={"action": "create", "tags": [{"key": k, "value": v} for k, v in tags.items()]})
    return client, headers, ids


def q(client, headers, **payload):
    r = client.post(f"{BASE}/resource_instances/action", json=payload, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def names(result):
    return sorted(r["resource_name"] for r in result["resources"])


def test_query_filters(four):
    client, headers, ids = four
    res = q(client, headers, action="filter", tags=[{"key": "env", "values": ["prod"]}])
    assert names(res) == ["alpha", "gamma"] and res["total_count"] == 2
    one = next(r for r in res["resources"] if r["resource_name"] == "alpha")
    assert one == {"resource_id": ids["alpha"], "resource_name": "alpha", "resource_detail": {},
                   "tags": [{"key": "env", "value": "prod"}, {"key": "team", "value": "a"}]}
    assert names(q(client, headers, action="filter", tags=[{"key": "env", "values": []},
                                                            {"key": "team", "values": ["a"]}])) == ["alpha", "beta"]
    assert names(q(client, headers, action="filter", tags=[{"key": "env", "values": ["prod", "dev"]}])) == \
        ["alpha", "beta", "gamma"]
    assert names(q(client, headers, action="filter", tags_any=[{"key": "team", "values": []},
                                                                {"key": "env", "values": ["prod"]}])) == \
        ["alpha", "beta", "gamma"]
    assert names(q(client, headers, action="filter", not_tags=[{"key": "env", "values": ["prod"]},
                                                                {"key": "team", "values": []}])) == \
        ["beta", "delta", "gamma"]
    assert names(q(client, headers, action="filter", not_tags_any=[{"key": "env", "values": ["prod"]},
                                                                    {"key": "team", "values": []}])) == ["delta"]
    assert names(q(client, headers, action="filter", matches=[{"key": "resource_name", "value": "mm"}])) == ["gamma"]
    assert names(q(client, headers, action="filter", matches=[{"key": "resource_name", "value": ""}])) == []
    assert names(q(client, headers, action="filter")) == ["alpha", "beta", "delta", "gamma"]
    assert q(client, headers, action="count", tags=[{"key": "env", "values": ["prod"]}]) == {"total_count": 2}


def test_query_paging(four):
    client, headers, _ = four
    res = q(client, headers, action="filter", limit="2", offset="1")
    assert [r["resource_name"] for r in res["resources"]] == ["beta", "gamma"] and res["total_count"] == 4
    res = q(client, headers, action="filter", limit=1, offset=3)
    assert [r["resource_name"] for r in res["resources"]] == ["delta"]
    assert q(client, headers, action="filter", offset="10")["resources"] == []


@pytest.mark.parametrize("payload", [
    {},
    {"action": "list"},
    {"action": "filter", "limit": "0"},
    {"action": "filter", "limit": "1001"},
    {"action": "filter", "limit": "abc"},
    {"action": "filter", "offset": "-1"},
    {"action": "filter", "tags": []},
    {"action": "filter", "tags": [{"key": "a", "values": ["x"]}, {"key": "a", "values": []}]},
    {"action": "filter", "tags": [{"key": "a"}]},
    {"action": "filter", "tags": [{"key": "a", "values": ["x", "x"]}]},
    {"action": "filter", "tags": [{"key": "a", "values": [str(i) for i in range(11)]}]},
    {"action": "filter", "tags_any": [{"key": f"k{i}", "values": []} for i in range(11)]},
    {"action": "filter", "matches": [{"key": "name", "value": "x"}]},
    {"action": "filter", "matches": []},
])
def test_query_rejects(four, payload):
    client, headers, _ = four
    r = client.post(f"{BASE}/resource_instances/action", json=payload, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", (payload, r.text)
