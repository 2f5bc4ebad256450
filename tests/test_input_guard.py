"""Input no CSBS call can mean is refused with 400 CSBS.9001 before any route runs, on every database, never a
500, and nothing is written: a NUL character anywhere in a request (path, query, JSON body; PostgreSQL cannot
compare text with a string holding U+0000), a JSON body nested absurdly deep."""

from __future__ import annotations

import json

import pytest

from policy_helpers import PROVIDER, WEB1, body as policy_body

ZERO = "00000000-0000-0000-0000-000000000000"


def _invalid(r):
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "CSBS.9001", r.text


@pytest.mark.parametrize("path", [
    "/v1/demo/checkpoint_items/%00",
    "/v1/demo/checkpoint_items?name=%00",
    "/v1/demo/checkpoint_items?resource_id=a%00b",
    "/v1/demo/checkpoint_items?marker=%00",
    "/v1/demo/checkpoint_items/count?resource_name=%00",
    "/v1/demo/policies/%00",
    "/v1/demo/policies?name=%00",
    "/v1/demo/csbs_backup/%00/tags",
    "/v1/demo/csbs_backup_policy/%00/tags",
    "/v1/demo/restores/%00",
])
def test_nul_in_the_url_is_400(demo, path):
    client, headers = demo
    _invalid(client.get(path, headers=headers))


def test_nul_in_a_delete_url_is_400(demo):
    client, headers = demo
    _invalid(client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/%00", headers=headers))
    _invalid(client.delete("/v1/demo/policies/%00", headers=headers))
    _invalid(client.post(f"/v1/demo/providers/{PROVIDER}/resources/%00/action", json={"protect": {}},
                         headers=headers))


@pytest.mark.parametrize("url,payload", [
    (f"/v1/demo/providers/{PROVIDER}/resources/action",
     {"check_protectable": [{"resource_id": "\x00", "resource_type": "OS::Nova::Server"}]}),
    (f"/v1/demo/providers/{PROVIDER}/checkpoints", {"checkpoint": {"plan_id": "\x00", "parameters": {}}}),
    (f"/v1/demo/providers/{PROVIDER}/resources/{WEB1}/action", {"protect": {"description": "a\x00b"}}),
    ("/v1/demo/csbs_backup/resource_instances/action",
     {"action": "filter", "tags": [{"key": "k", "values": ["\x00"]}]}),
    ("/v1/demo/restores", {"restore": {"provider_id": PROVIDER, "checkpoint_id": ZERO, "parameters": {
        "checkpoint_item_id": "\x00", "power_on": True,
        "targets": {"server_id": WEB1, "volumes": [{"backup_id": "b", "volume_id": "v"}]}}}}),
])
def test_nul_in_a_json_body_is_400(demo, url, payload):
    client, headers = demo
    _invalid(client.post(url, content=json.dumps(payload).encode(), headers=headers))


def test_nul_in_a_policy_is_400_and_nothing_is_written(demo):
    client, headers = demo
    b = policy_body()
    b["policy"]["description"] = "night\x00ly"
    _invalid(client.post("/v1/demo/policies", json=b, headers=headers))
    b = policy_body()
    b["policy"]["scheduled_operations"][0]["operation_definition"] = {"max_backups": 3, "\x00": 1}
    _invalid(client.post("/v1/demo/policies", json=b, headers=headers))
    assert client.get("/v1/demo/policies", headers=headers).json() == {"policies": []}
    created = client.post("/v1/demo/policies", json=policy_body(), headers=headers)
    assert created.status_code == 200, created.text
    pid = created.json()["policy"]["id"]
    _invalid(client.put(f"/v1/demo/policies/{pid}", json={"policy": {"name": "a\x00"}}, headers=headers))
    assert client.get(f"/v1/demo/policies/{pid}", headers=headers).json()["policy"]["name"] == "c2c-policy"


def test_an_escaped_backslash_before_u0000_is_not_a_nul(demo):
    """``"\\\\u0000"`` in JSON is the six characters ``\\u0000``, not U+0000: validation, not the NUL check,
    answers it (and a server id holding it does not exist)."""
    client, headers = demo
    raw = ('{"check_protectable": [{"resource_id": "\\\\u0000", "resource_type": "OS::Nova::Server"}]}').encode()
    r = client.post(f"/v1/demo/providers/{PROVIDER}/resources/action", content=raw, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["protectable"][0]["error_code"] == "CSBS.6000"


def _nested(levels: int) -> dict:
    value: dict = {"a": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_deeply_nested_extra_info_is_400_and_no_backup_starts(demo):
    """A protect whose extra_info nests 500 deep used to start the backup and then answer 500 (its response could
    not be serialized)."""
    client, headers = demo
    url = f"/v1/demo/providers/{PROVIDER}/resources/{WEB1}/action"
    for levels in (40, 500):
        _invalid(client.post(url, json={"protect": {"extra_info": _nested(levels)}}, headers=headers))
    assert client.get("/v1/demo/checkpoint_items/count", headers=headers).json() == {"count": 0}
    r = client.post(url, json={"protect": {"extra_info": _nested(20)}}, headers=headers)
    assert r.status_code == 200, r.text


def test_deeply_nested_policy_parameters_are_400_and_no_policy_is_made(demo):
    client, headers = demo
    b = policy_body()
    b["policy"]["parameters"] = {"common": _nested(600)}
    _invalid(client.post("/v1/demo/policies", json=b, headers=headers))
    b["policy"]["parameters"] = {"common": {}}
    b["policy"]["resources"][0]["extra_info"] = _nested(100)
    _invalid(client.post("/v1/demo/policies", json=b, headers=headers))
    assert client.get("/v1/demo/policies", headers=headers).json() == {"policies": []}


def test_who_are_you_comes_before_the_input_guard(demo, make_token):
    """As for any other bad input, a missing/bad token answers 401 and another project's token 403 first."""
    client, headers = demo
    url = f"/v1/demo/providers/{PROVIDER}/resources/{WEB1}/action"
    deep = {"protect": {"extra_info": _nested(100)}}
    for h in ({}, {"X-Auth-Token": "bogus"}):
        r = client.post(url, json=deep, headers=h)
        assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301", r.text
        assert r.headers["www-authenticate"] == "X-Auth-Token"
        r = client.get("/v1/demo/checkpoint_items?name=%00", headers=h)
        assert r.status_code == 401, r.text
    other = {"X-Auth-Token": make_token("other-project", "member")}
    r = client.post(url, json=deep, headers=other)
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0302", r.text
    _invalid(client.post(url, json=deep, headers=headers))
