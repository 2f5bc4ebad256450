"""The policy calls over HTTP: shapes against the wire fixtures, every validation rule and code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy_helpers import DB1, GONE, PATTERN, PROVIDER, WEB1, body, create

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wire"


def keys_of(obj):
    """The set of key paths of a JSON document (lists are entered through their first element)."""
    out = set()

    def walk(x, prefix):
        if isinstance(x, dict):
            for k, v in x.items():
                out.add(prefix + k)
                walk(v, prefix + k + ".")
        elif isinstance(x, list) and x:
            walk(x[0], prefix)

    walk(obj, "")
    return out


def test_create_matches_golangsdk_fixture(demo):
    client, headers = demo
    fixture_req = json.loads((FIXTURES / "golangsdk-policies.createRequest.json").read_text())
    fixture_req["policy"]["resources"][0]["id"] = WEB1
    r = create(client, headers, fixture_req)
    assert r.status_code == 200, r.text
    got = r.json()
    want = json.loads((FIXTURES / "golangsdk-policies.createResponse.json").read_text())
    assert keys_of(want) <= keys_of(got)
    p = got["policy"]
    assert p["status"] == "suspended"
    assert p["tags"] == []
    assert p["provider_id"] == PROVIDER and p["project_id"] == "demo"
    op = p["scheduled_operations"][0]
    assert op["operation_definition"] == {"max_backups": "20", "provider_id": PROVIDER, "plan_id": p["id"]}
    assert op["trigger"]["properties"]["pattern"] == PATTERN
    assert op["trigger"]["type"] == "time" and op["trigger"]["name"] == "default"
    assert op["trigger_id"] == op["trigger"]["id"]
    assert len(op["trigger"]["properties"]["start_time"]) == len("2018-08-20 07:31:32")
    assert p["created_at"][10] == "T" and len(p["created_at"]) == len("2018-08-20T07:31:32.718435")
    assert p["resources"] == [{"id": WEB1, "type": "OS::Nova::Server", "name": "resource1"}]


def test_get_and_list_return_numbers(demo):
    client, headers = demo
    pid = create(client, headers).json()["policy"]["id"]
    got = client.get(f"/v1/demo/policies/{pid}", headers=headers).json()
    want = json.loads((FIXTURES / "golangsdk-policies.getResponse.json").read_text())
    assert keys_of(want) <= keys_of(got)
    assert got["policy"]["scheduled_operations"][0]["operation_definition"]["max_backups"] == 20
    listed = client.get("/v1/demo/policies", headers=headers).json()
    assert keys_of(json.loads((FIXTURES / "gopher-policies.listResponse.json").read_text())) <= keys_of(listed)
    assert listed["policies"][0]["scheduled_operations"][0]["operation_definition"]["max_backups"] == 20
    assert "policies_links" not in listed


def test_update_matches_fixture_and_keeps_suspended(demo):
    client, headers = demo
    created = create(client, headers).json()["policy"]
    upd = json.loads((FIXTURES / "golangsdk-policies.updateRequest.json").read_text())
    upd["policy"]["scheduled_operations"][0]["id"] = created["scheduled_operations"][0]["id"]
    r = client.put(f"/v1/demo/policies/{created['id']}", json=upd, headers=headers)
    assert r.status_code == 200, r.text
    got = r.json()
    want = json.loads((FIXTURES / "golangsdk-policies.updateResponse.json").read_text())
    assert keys_of(want) <= keys_of(got)
    p = got["policy"]
    assert p["name"] == "c2c-policy-update" and p["status"] == "suspended"
    assert p["scheduled_operations"][0]["operation_definition"]["retention_duration_days"] == "-1"
    assert p["scheduled_operations"][0]["trigger"]["properties"]["start_time"] == \
        created["scheduled_operations"][0]["trigger"]["properties"]["start_time"]


def test_status_follows_enabled_changes(demo):
    client, headers = demo
    created = create(client, headers).json()["policy"]
    op_id = created["scheduled_operations"][0]["id"]
    url = f"/v1/demo/policies/{created['id']}"
    r = client.put(url, json={"policy": {"scheduled_operations": [{"id": op_id, "enabled": False}]}}, headers=headers)
    assert r.json()["policy"]["status"] == "disabled"
    assert r.json()["policy"]["scheduled_operations"][0]["enabled"] is False
    r = client.put(url, json={"policy": {"scheduled_operations": [{"id": op_id, "enabled": True}]}}, headers=headers)
    assert r.json()["policy"]["status"] == "enabled"
    assert client.get(url, headers=headers).json()["policy"]["status"] == "enabled"
    listed = client.get("/v1/demo/policies?status=enabled", headers=headers).json()["policies"]
    assert [p["id"] for p in listed] == [created["id"]]
    assert client.get("/v1/demo/policies?status=suspended", headers=headers).json()["policies"] == []


def test_delete_then_404(demo):
    client, headers = demo
    pid = create(client, headers).json()["policy"]["id"]
    r = client.delete(f"/v1/demo/policies/{pid}", headers=headers)
    assert r.status_code == 200 and r.content == b""
    for method in ("get", "delete"):
        r = getattr(client, method)(f"/v1/demo/policies/{pid}", headers=headers)
        assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"
    r = client.put(f"/v1/demo/policies/{pid}", json={"policy": {"name": "x"}}, headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"
    # the server is free again
    assert create(client, headers).status_code == 200


def test_duplicate_name_9007(demo):
    client, headers = demo
    assert create(client, headers, body("same", resources=(WEB1,))).status_code == 200
    r = create(client, headers, body("same", resources=(DB1,)))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9007"
    other = create(client, headers, body("other", resources=(DB1,))).json()["policy"]
    r = client.put(f"/v1/demo/policies/{other['id']}", json={"policy": {"name": "same"}}, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9007"


def test_server_in_another_policy_6004(demo):
    client, headers = demo
    create(client, headers, body("first", resources=(WEB1,)))
    r = create(client, headers, body("second", resources=(DB1, WEB1)))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6004"
    assert WEB1 in r.json()["error_msg"]
    second = create(client, headers, body("second", resources=(DB1,))).json()["policy"]
    r = client.put(f"/v1/demo/policies/{second['id']}",
                   json={"policy": {"resources": [{"id": WEB1, "type": "OS::Nova::Server", "name": "w"}]}},
                   headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6004"
    # check_protectable reports the binding
    r = client.post(f"/v1/demo/providers/{PROVIDER}/resources/action",
                    json={"check_protectable": [{"resource_id": DB1, "resource_type": "OS::Nova::Server"}]},
                    headers=headers)
    assert r.json()["protectable"][0]["error_code"] == "CSBS.6004"


def test_policy_quota_0001(demo, runtime):
    client, headers = demo
    runtime.settings.policy_quota = 2
    assert create(client, headers, body("a", resources=())).status_code == 200
    assert create(client, headers, body("b", resources=())).status_code == 200
    r = create(client, headers, body("c", resources=()))
    assert r.status_code == 400 and r.json() == {"error_code": "CSBS.0001", "error_msg": "Service over limit"}


def test_unknown_or_terminated_server(demo):
    client, headers = demo
    r = create(client, headers, body("x", resources=("00000000-0000-0000-0000-000000000000",)))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6000"
    r = create(client, headers, body("x", resources=(GONE,)))
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6001"
    b = body("x")
    b["policy"]["resources"][0]["type"] = "OS::Cinder::Volume"
    r = create(client, headers, b)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6003"


def _mutate(path, value):
    b = body("valid")
    target = b["policy"]
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return b


OP = ("scheduled_operations", 0)
BAD = [
    (("name",), ""),
    (("name",), "has space"),
    (("name",), "x" * 256),
    (("name",), KeyError),
    (("description",), "a<b"),
    (("description",), "x" * 256),
    (("provider_id",), "not-the-provider"),
    (("provider_id",), KeyError),
    (("parameters",), KeyError),
    (("resources",), KeyError),
    (("resources",), [{"id": WEB1, "type": "OS::Nova::Server", "name": "a"}] * 2),
    (("scheduled_operations",), []),
    (("scheduled_operations",), KeyError),
    (OP + ("operation_type",), "restore"),
    (OP + ("name",), "bad name"),
    (OP + ("description",), ">"),
    (OP + ("enabled",), "yes"),
    (OP + ("operation_definition",), {"max_backups": -2}),
    (OP + ("operation_definition",), {"max_backups": 100000}),
    (OP + ("operation_definition",), {"retention_duration_days": "7"}),
    (OP + ("operation_definition",), {"day_backups": 5}),
    (OP + ("operation_definition",), {"timezone": "UTC+08:00"}),
    (OP + ("operation_definition",), {"day_backups": 101, "timezone": "UTC+08:00"}),
    (OP + ("operation_definition",), {"day_backups": 1, "timezone": "Mars/Olympus"}),
    (OP + ("operation_definition",), {"provider_id": "other"}),
    (OP + ("trigger",), {"properties": {"pattern": "RRULE:FREQ=HOURLY"}}),
    (OP + ("trigger",), {"properties": {"pattern": "BEGIN:VEVENT\nRRULE:FREQ=HOURLY\nEND:VEVENT"}}),
    (OP + ("trigger",), {"properties": {"pattern": "BEGIN:VEVENT\nRRULE:FREQ=DAILY;BYHOUR=1,2;BYMINUTE=0,30\nEND:VEVENT"}}),
    (OP + ("trigger",), {"properties": {"pattern": "x" * 10241}}),
    (OP + ("trigger",), {}),
    (("tags",), []),
    (("tags",), [{"key": f"k{i}", "value": "v"} for i in range(11)]),
    (("tags",), [{"key": "k", "value": "v"}, {"key": " k ", "value": "w"}]),
    (("tags",), [{"key": "k" * 37, "value": "v"}]),
    (("tags",), [{"key": "k", "value": "v" * 44}]),
    (("tags",), [{"key": "k!", "value": "v"}]),
]


@pytest.mark.parametrize("path,value", BAD, ids=[f"{'.'.join(map(str, p))}={str(v)[:20]}" for p, v in BAD])
def test_create_rejects(demo, path, value):
    client, headers = demo
    r = create(client, headers, _mutate(path, value))
    assert r.status_code == 400, r.text
    code = r.json()["error_code"]
    assert code in ("CSBS.9001", "CSBS.7000"), r.json()
    assert client.get("/v1/demo/policies", headers=headers).json()["policies"] == []


def test_tags_on_create_trimmed_and_over_limit_code(demo):
    client, headers = demo
    b = body("tagged")
    b["policy"]["tags"] = [{"key": " env ", "value": " prod "}, {"key": "team", "value": ""}]
    p = create(client, headers, b).json()["policy"]
    assert p["tags"] == [{"key": "env", "value": "prod"}, {"key": "team", "value": ""}]
    b = body("many", resources=())
    b["policy"]["tags"] = [{"key": f"k{i}", "value": "v"} for i in range(11)]
    assert create(client, headers, b).json()["error_code"] == "CSBS.7000"


@pytest.mark.parametrize("pattern", [
    PATTERN,
    "BEGIN:VEVENT\nRRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=14;BYMINUTE=00\nEND:VEVENT",
    "BEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=0,6,12,18;BYMINUTE=0;\r\nEND:VEVENT\r\n",
    "BEGIN:VCALENDAR\\r\\nBEGIN:VEVENT\\r\\nRRULE:FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=27\\r\\nEND:VEVENT\\r\\nEND:VCALENDAR\\r\\n",
])
def test_pattern_spellings_accepted_and_echoed(demo, pattern):
    client, headers = demo
    b = body("p")
    b["policy"]["scheduled_operations"][0]["trigger"]["properties"]["pattern"] = pattern
    r = create(client, headers, b)
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["scheduled_operations"][0]["trigger"]["properties"]["pattern"] == pattern


def test_operation_definition_round_trip(demo):
    client, headers = demo
    b = body("lt", max_backups=5, retention_duration_days=-1, permanent=True, day_backups=7, week_backups=4,
             month_backups=12, year_backups=2, timezone="UTC+08:00")
    p = create(client, headers, b).json()["policy"]
    d = p["scheduled_operations"][0]["operation_definition"]
    assert d == {"max_backups": "5", "retention_duration_days": "-1", "permanent": "True", "day_backups": "7",
                 "week_backups": "4", "month_backups": "12", "year_backups": "2", "timezone": "UTC+08:00",
                 "plan_id": p["id"], "provider_id": PROVIDER}
    got = client.get(f"/v1/demo/policies/{p['id']}", headers=headers).json()["policy"]
    d = got["scheduled_operations"][0]["operation_definition"]
    assert d["max_backups"] == 5 and d["permanent"] is True and d["day_backups"] == 7


def test_list_paging_sort_filters(demo):
    client, headers = demo
    ids = [create(client, headers, body(f"p{i}", resources=())).json()["policy"]["id"] for i in range(5)]
    url = "/v1/demo/policies"
    newest_first = [p["id"] for p in client.get(url, headers=headers).json()["policies"]]
    assert newest_first == ids[::-1]
    asc = [p["name"] for p in client.get(url + "?sort=created_at:asc", headers=headers).json()["policies"]]
    assert asc == [f"p{i}" for i in range(5)]
    by_name = [p["name"] for p in client.get(url + "?sort=name:desc", headers=headers).json()["policies"]]
    assert by_name == ["p4", "p3", "p2", "p1", "p0"]
    page = client.get(url + "?sort=created_at:asc&limit=2", headers=headers).json()
    assert [p["name"] for p in page["policies"]] == ["p0", "p1"]
    nxt = page["policies_links"][0]
    assert nxt["rel"] == "next" and f"marker={ids[1]}" in nxt["href"]
    page2 = client.get(url + f"?sort=created_at:asc&limit=2&marker={ids[1]}", headers=headers).json()
    assert [p["name"] for p in page2["policies"]] == ["p2", "p3"]
    last = client.get(url + f"?sort=created_at:asc&limit=2&marker={ids[3]}", headers=headers).json()
    assert [p["name"] for p in last["policies"]] == ["p4"] and "policies_links" not in last
    off = client.get(url + "?sort=created_at%3Aasc&limit=3&offset=3", headers=headers).json()
    assert [p["name"] for p in off["policies"]] == ["p3", "p4"]
    assert [p["name"] for p in client.get(url + "?name=p2", headers=headers).json()["policies"]] == ["p2"]
    assert client.get(url + "?name=p", headers=headers).json()["policies"] == []
    for bad in ("?limit=0", "?limit=x", "?offset=-1", "?sort=bogus", "?sort=name:up", "?marker=nope",
                "?all_tenants=maybe"):
        r = client.get(url + bad, headers=headers)
        assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", bad


def test_projects_are_isolated_and_all_tenants_is_admin_only(demo, make_token):
    client, headers = demo
    pid = create(client, headers).json()["policy"]["id"]
    other = {"X-Auth-Token": make_token("other", "member")}
    assert client.get("/v1/other/policies", headers=other).json()["policies"] == []
    r = client.get(f"/v1/other/policies/{pid}", headers=other)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"
    assert client.get("/v1/demo/policies", headers=other).status_code == 403
    assert client.get("/v1/other/policies?all_tenants=true", headers=other).status_code == 403
    assert client.get("/v1/other/policies?all_tenants=1",
                      headers={"X-Auth-Token": make_token("other", "admin")}).status_code == 403
    admin = {"X-Auth-Token": make_token(None, "cloud-admin")}
    assert [p["id"] for p in client.get("/v1/other/policies?all_tenants=1", headers=admin).json()["policies"]] == [pid]


def test_reader_cannot_write(demo, make_token):
    client, _ = demo
    reader = {"X-Auth-Token": make_token("demo", "reader")}
    assert create(client, reader).status_code == 403
    assert client.get("/v1/demo/policies", headers=reader).status_code == 200


def test_update_validation(demo):
    client, headers = demo
    p = create(client, headers).json()["policy"]
    url = f"/v1/demo/policies/{p['id']}"
    op_id = p["scheduled_operations"][0]["id"]
    for bad in (
        {"policy": {"name": "bad name"}},
        {"policy": {"description": "<"}},
        {"policy": {"scheduled_operations": [{"id": "nope"}]}},
        {"policy": {"scheduled_operations": [{"enabled": True}]}},
        {"policy": {"scheduled_operations": [{"id": op_id, "trigger": {"properties": {"pattern": "x"}}}]}},
        {"policy": {"scheduled_operations": [{"id": op_id, "operation_definition": {"week_backups": 2}}]}},
        {"nopolicy": {}},
    ):
        r = client.put(url, json=bad, headers=headers)
        assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", (bad, r.text)
    assert client.get(url, headers=headers).json()["policy"] == {**p, "scheduled_operations": [
        {**p["scheduled_operations"][0], "operation_definition": {"max_backups": 20, "plan_id": p["id"],
                                                                   "provider_id": PROVIDER}}]}
    r = client.put(url, json={"policy": {"resources": [], "description": "now empty"}}, headers=headers)
    assert r.json()["policy"]["resources"] == [] and r.json()["policy"]["description"] == "now empty"


def test_update_rebinds_servers_in_order(demo):
    client, headers = demo
    p = create(client, headers, body("rebind", resources=(WEB1,))).json()["policy"]
    url = f"/v1/demo/policies/{p['id']}"
    both = [{"id": DB1, "type": "OS::Nova::Server", "name": "db"},
            {"id": WEB1, "type": "OS::Nova::Server", "name": "web", "extra_info": {"k": "v"}}]
    r = client.put(url, json={"policy": {"resources": both}}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["resources"] == both
    assert client.get(url, headers=headers).json()["policy"]["resources"] == both


def test_concurrent_creates_bind_a_server_once(demo, runtime):
    import threading

    client, headers = demo
    results = []

    def go(i):
        results.append(create(client, headers, body(f"race{i}", resources=(WEB1,))).json())

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if "policy" in r]
    assert len(ok) == 1
    assert sorted(r["error_code"] for r in results if "policy" not in r) == ["CSBS.6004"] * 3


def test_unknown_fields_are_ignored_by_create_and_update_alike(demo):
    """Create and update both ignore keys the reference does not define, at every level (real clients send
    extras: Terraform-style bodies repeat create-only fields such as provider_id/operation_type on update);
    the known fields beside them still apply and the extras are never stored or echoed."""
    client, headers = demo
    b = body("extras")
    b["policy"]["colour"] = "blue"
    b["policy"]["parameters"]["unknown_param"] = 1
    b["policy"]["scheduled_operations"][0]["bogus"] = True
    b["policy"]["scheduled_operations"][0]["operation_definition"]["speed"] = 9
    b["policy"]["resources"][0]["weight"] = 3
    r = create(client, headers, b)
    assert r.status_code == 200, r.text
    p = r.json()["policy"]
    url = f"/v1/demo/policies/{p['id']}"
    op_id = p["scheduled_operations"][0]["id"]
    upd = {"policy": {
        "name": "extras-2", "colour": "red", "provider_id": PROVIDER, "tags": [{"key": "k", "value": "v"}],
        "parameters": {"common": {}, "unknown_param": 2},
        "resources": [{"id": DB1, "type": "OS::Nova::Server", "name": "db", "weight": 1}],
        "scheduled_operations": [{"id": op_id, "operation_type": "backup", "bogus": 1, "enabled": False,
                                  "operation_definition": {"max_backups": 5, "speed": 1},
                                  "trigger": {"type": "time", "properties": {"pattern": PATTERN, "x": 1}}}],
    }}
    r = client.put(url, json=upd, headers=headers)
    assert r.status_code == 200, r.text
    shown = client.get(url, headers=headers).json()["policy"]
    assert shown["name"] == "extras-2" and shown["status"] == "disabled"
    assert shown["parameters"] == {"common": {}}
    assert shown["resources"] == [{"id": DB1, "type": "OS::Nova::Server", "name": "db"}]
    assert shown["tags"] == []  # tags change through the tag calls only
    op = shown["scheduled_operations"][0]
    assert op["enabled"] is False and op["operation_definition"] == {"max_backups": 5, "plan_id": p["id"],
                                                                     "provider_id": PROVIDER}
    text = json.dumps(shown)
    assert all(word not in text for word in ("colour", "unknown_param", "bogus", "speed", "weight"))
