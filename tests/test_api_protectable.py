"""check_protectable over HTTP on examples/sandbox.yaml: every outcome, order, bad input, auth, routes, and the
server's ``/openapi.json`` checked against every real answer (openapi-core)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from openapi_check import Contract

from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import LocalToken, Policy, PolicyResource, ResourceLock

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
ACTION = f"/v1/demo/providers/{PROVIDER}/resources/action"
SERVER, BMS, VOLUME = "OS::Nova::Server", "OS::Ironic::BareMetalServer", "OS::Cinder::Volume"

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
DB_1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
BROKEN_1 = "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003"
RESIZING_1 = "3c9a4d3b-7f1b-4c8f-8b62-4d7c5c3d0004"
GONE_1 = "4dab5e4c-8a2c-4d90-9c73-5e8d6d4e0005"
DISKLESS_1 = "5ebc6f5d-9b3d-4ea1-8d84-6f9e7e5f0006"
CLUSTER_A = "6fcd7a6e-ac4e-4fb2-9e95-7a0f8f6a0007"
SHARED_DISK = "6fcd7a6e-ac4e-4fb2-9e95-7a0f8f6a1099"
DSS_1 = "7ade8b7f-bd5f-40c3-8fa6-8b1a9a7b0008"
DSS_1_DISK = "7ade8b7f-bd5f-40c3-8fa6-8b1a9a7b1001"
REMOTE_1 = "8bef9c8a-ce6a-41d4-9ab7-9c2babac0009"
BMS_1 = "9cfaad9b-df7b-42e5-8bc8-adacbcbd0010"
PAUSED_1 = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b0011"
SPARE_DISK = "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c0012"
SECRET_1 = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def ok(rid, rtype=SERVER):
    return {"resource_id": rid, "resource_type": rtype, "result": True}


def refused(rid, code, msg, rtype=SERVER):
    return {"resource_id": rid, "resource_type": rtype, "result": False, "error_code": code, "error_msg": msg}


#: (resource_id, resource_type, the exact check_resp the example inventory must give)
OUTCOMES = [
    (WEB_1, SERVER, ok(WEB_1)),
    (DB_1, SERVER, ok(DB_1)),
    (BMS_1, BMS, ok(BMS_1, BMS)),
    (UNKNOWN, SERVER, refused(UNKNOWN, "CSBS.6000", "server do not exist")),
    (SECRET_1, SERVER, refused(SECRET_1, "CSBS.6000", "server do not exist")),
    (SPARE_DISK, SERVER, refused(SPARE_DISK, "CSBS.6000", "server do not exist")),
    (BMS_1, SERVER, refused(BMS_1, "CSBS.6000", "server do not exist")),
    (GONE_1, SERVER, refused(GONE_1, "CSBS.6001", "The server has stopped.")),
    (SPARE_DISK, VOLUME, refused(SPARE_DISK, "CSBS.6003",
                                 f"Resource ({SPARE_DISK}) type (OS::Cinder::Volume) is not support protection.",
                                 VOLUME)),
    (WEB_1, "OS::Glance::Image", refused(WEB_1, "CSBS.6003",
                                         f"Resource ({WEB_1}) type (OS::Glance::Image) is not support protection.",
                                         "OS::Glance::Image")),
    (BROKEN_1, SERVER, refused(BROKEN_1, "CSBS.6006", f"Server ({BROKEN_1}) status (ERROR) is not allowed to protect.")),
    (RESIZING_1, SERVER, refused(RESIZING_1, "CSBS.6006",
                                 f"Server ({RESIZING_1}) status (RESIZE(resize_migrating)) is not allowed to protect.")),
    (PAUSED_1, SERVER, refused(PAUSED_1, "CSBS.6006", f"Server ({PAUSED_1}) status (PAUSED) is not allowed to protect.")),
    (DISKLESS_1, SERVER, refused(DISKLESS_1, "CSBS.6007",
                                 f"No volume attached to the server ({DISKLESS_1}) for protect.")),
    (CLUSTER_A, SERVER, refused(CLUSTER_A, "CSBS.6010",
                                f"Volume ({SHARED_DISK}) attached to server ({CLUSTER_A}) is shareable volume.")),
    (REMOTE_1, SERVER, refused(REMOTE_1, "CSBS.6027",
                               f"The AZ where the resource ({REMOTE_1}) is located does not support backup.")),
    (DSS_1, SERVER, refused(DSS_1, "CSBS.6033", f"Service type of volume {DSS_1_DISK}(belong to server {DSS_1}) is dss.")),
]


@pytest.fixture(scope="module")
def contract_spec():
    return {}


@pytest.fixture
def contract(client, contract_spec) -> Contract:
    if "spec" not in contract_spec:
        r = client.get("/openapi.json")
        assert r.status_code == 200
        contract_spec["spec"] = Contract(r.json())
    return contract_spec["spec"]


@pytest.fixture
def api(demo, contract):
    """``(call, headers)``: ``call(method, url, **kw)`` sends through the test client and checks the answer
    against /openapi.json (and the request too when it succeeded)."""
    client, headers = demo

    def call(method, url, check=True, **kw):
        r = client.request(method, url, **kw)
        if check:
            contract.check(r, request_too=r.status_code < 400)
            assert r.headers["content-type"].startswith("application/json")
        return r

    return call, headers


def items(*pairs):
    return {"check_protectable": [{"resource_id": rid, "resource_type": rtype} for rid, rtype in pairs]}


def error_of(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error_code", "error_msg"}, body
    assert body["error_code"] == code, body
    assert body["error_msg"]
    return body["error_msg"]


# --- every outcome ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rid, rtype, expected", OUTCOMES, ids=[f"{o[2].get('error_code', 'ok')}-{o[0][:8]}" for o in OUTCOMES])
def test_each_outcome_alone(api, rid, rtype, expected):
    call, headers = api
    r = call("POST", ACTION, json=items((rid, rtype)), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"protectable": [expected]}


def test_every_outcome_in_one_batch_keeps_request_order(api):
    call, headers = api
    order = list(reversed(OUTCOMES)) + OUTCOMES
    r = call("POST", ACTION, json=items(*[(rid, rtype) for rid, rtype, _ in order]), headers=headers)
    assert r.status_code == 200
    assert r.json()["protectable"] == [expected for _, _, expected in order]


def test_passing_check_omits_error_fields(api):
    call, headers = api
    r = call("POST", ACTION, json=items((WEB_1, SERVER)), headers=headers)
    assert set(r.json()["protectable"][0]) == {"resource_id", "resource_type", "result"}
    # the literal body of the reference page's example
    assert r.text.replace(" ", "") == json.dumps(r.json()).replace(" ", "")


def test_duplicates_answered_each_time(api):
    call, headers = api
    r = call("POST", ACTION, json=items((WEB_1, SERVER), (BROKEN_1, SERVER), (WEB_1, SERVER), (WEB_1, SERVER)),
             headers=headers)
    assert r.json()["protectable"] == [ok(WEB_1), OUTCOMES[10][2], ok(WEB_1), ok(WEB_1)]


def test_running_backup_gives_6005(api, runtime):
    call, headers = api
    with transaction(runtime.sessions) as s:
        s.add(ResourceLock(resource_id=WEB_1, project_id="demo", operation="backup"))
    r = call("POST", ACTION, json=items((WEB_1, SERVER), (DB_1, SERVER)), headers=headers)
    assert r.json()["protectable"] == [refused(WEB_1, "CSBS.6005", f"Server ({WEB_1}) is already in service."),
                                       ok(DB_1)]


def test_bound_to_policy_stays_true_with_6004(api, runtime):
    call, headers = api
    with transaction(runtime.sessions) as s:
        s.add(Policy(id="11111111-2222-4333-8444-555555555555", project_id="demo", name="daily", provider_id=PROVIDER,
                     parameters={}))
        s.flush()
        s.add(PolicyResource(policy_id="11111111-2222-4333-8444-555555555555", resource_id=DB_1,
                             resource_type=SERVER, name="db-1"))
    r = call("POST", ACTION, json=items((DB_1, SERVER), (WEB_1, SERVER)), headers=headers)
    first, second = r.json()["protectable"]
    assert first["result"] is True
    assert first["error_code"] == "CSBS.6004"
    assert first["error_msg"].startswith(f"Server ({DB_1}) is already in service.")
    assert "daily" in first["error_msg"] and "11111111-2222-4333-8444-555555555555" in first["error_msg"]
    assert second == ok(WEB_1)


def test_a_cloud_admin_sees_the_urls_project(client, inventory, make_token, contract):
    r = client.post(ACTION, json=items((WEB_1, SERVER)), headers={"X-Auth-Token": make_token("ops", "admin")})
    assert r.status_code == 403  # an admin of another project is admin there only
    headers = {"X-Auth-Token": make_token(None, "cloud-admin")}
    r = client.post(ACTION, json=items((WEB_1, SERVER), (SECRET_1, SERVER)), headers=headers)
    contract.check(r, request_too=True)
    assert r.json()["protectable"] == [ok(WEB_1), refused(SECRET_1, "CSBS.6000", "server do not exist")]
    r = client.post(f"/v1/other-project/providers/{PROVIDER}/resources/action", json=items((SECRET_1, SERVER)),
                    headers=headers)
    assert r.json()["protectable"] == [ok(SECRET_1)]


def test_reader_may_check(client, inventory, make_token):
    r = client.post(ACTION, json=items((WEB_1, SERVER)), headers={"X-Auth-Token": make_token("demo", "reader")})
    assert r.json() == {"protectable": [ok(WEB_1)]}


# --- batch limit --------------------------------------------------------------------------------------------


def test_batch_of_1000_answered_1001_refused(api):
    call, headers = api
    batch = [(WEB_1 if i % 3 else BROKEN_1, SERVER) for i in range(1000)]
    r = call("POST", ACTION, json=items(*batch), headers=headers)
    assert r.status_code == 200
    verdicts = r.json()["protectable"]
    assert len(verdicts) == 1000
    assert [v["result"] for v in verdicts] == [bool(i % 3) for i in range(1000)]
    r = call("POST", ACTION, json=items(*(batch + [(WEB_1, SERVER)])), headers=headers)
    assert "1000" in error_of(r, 400, "CSBS.9001")


def test_batch_limit_is_configurable(client, runtime, inventory, make_token):
    runtime.settings.batch_limit = 2
    headers = {"X-Auth-Token": make_token()}
    assert client.post(ACTION, json=items((WEB_1, SERVER), (DB_1, SERVER)), headers=headers).status_code == 200
    r = client.post(ACTION, json=items((WEB_1, SERVER), (DB_1, SERVER), (BMS_1, BMS)), headers=headers)
    error_of(r, 400, "CSBS.9001")


# --- bad input ----------------------------------------------------------------------------------------------

BAD_BODIES = {
    "malformed-json": b'{"check_protectable": [',
    "not-json-at-all": b"check_protectable=yes",
    "empty-body": b"",
    "json-null": b"null",
    "json-array": b"[]",
    "json-string": b'"check_protectable"',
    "missing-check_protectable": b"{}",
    "other-key-only": b'{"check_restorable_typo": []}',
    "check_protectable-null": b'{"check_protectable": null}',
    "check_protectable-empty": b'{"check_protectable": []}',
    "check_protectable-object": b'{"check_protectable": {"resource_id": "x", "resource_type": "OS::Nova::Server"}}',
    "check_protectable-string": b'{"check_protectable": "x"}',
    "item-not-object": b'{"check_protectable": ["6507cb66-90dc-4a12-a573-c9f3398f899d"]}',
    "item-null": b'{"check_protectable": [null]}',
    "item-missing-resource_id": b'{"check_protectable": [{"resource_type": "OS::Nova::Server"}]}',
    "item-missing-resource_type": b'{"check_protectable": [{"resource_id": "6507cb66-90dc-4a12-a573-c9f3398f899d"}]}',
    "resource_id-number": b'{"check_protectable": [{"resource_id": 12, "resource_type": "OS::Nova::Server"}]}',
    "resource_id-null": b'{"check_protectable": [{"resource_id": null, "resource_type": "OS::Nova::Server"}]}',
    "resource_id-empty": b'{"check_protectable": [{"resource_id": "", "resource_type": "OS::Nova::Server"}]}',
    "resource_id-too-long": ('{"check_protectable": [{"resource_id": "%s", "resource_type": "OS::Nova::Server"}]}'
                             % ("a" * 65)).encode(),
    "resource_type-bool": b'{"check_protectable": [{"resource_id": "x", "resource_type": true}]}',
    "resource_type-list": b'{"check_protectable": [{"resource_id": "x", "resource_type": ["OS::Nova::Server"]}]}',
    "second-item-bad": b'{"check_protectable": [{"resource_id": "x", "resource_type": "OS::Nova::Server"}, {}]}',
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_body_is_400_csbs_9001(api, name):
    call, headers = api
    r = call("POST", ACTION, content=BAD_BODIES[name], headers={**headers, "Content-Type": "application/json"})
    msg = error_of(r, 400, "CSBS.9001")
    assert msg.startswith("Invalid request parameters")


def test_bad_body_message_names_the_field(api):
    call, headers = api
    r = call("POST", ACTION, json={"check_protectable": [{"resource_type": SERVER}]}, headers=headers)
    assert "check_protectable.0.resource_id" in error_of(r, 400, "CSBS.9001")
    r = call("POST", ACTION, content=b"{", headers={**headers, "Content-Type": "application/json"})
    assert "not valid JSON" in error_of(r, 400, "CSBS.9001")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain",
                                          "application/json; charset=utf-8", "application/vnd.csbs+json"])
def test_body_is_json_whatever_the_content_type(api, content_type):
    """``curl -d`` sends application/x-www-form-urlencoded: the body is still read as JSON."""
    call, headers = api
    hdrs = dict(headers)
    if content_type:
        hdrs["Content-Type"] = content_type
    r = call("POST", ACTION, content=json.dumps(items((WEB_1, SERVER))).encode(), headers=hdrs, check=False)
    assert r.status_code == 200, r.text
    assert r.json() == {"protectable": [ok(WEB_1)]}


def test_multipart_body_is_refused(api):
    call, headers = api
    r = call("POST", ACTION, files={"check_protectable": ("x.json", b"{}")}, headers=headers, check=False)
    error_of(r, 400, "CSBS.9001")


def test_unknown_provider_is_400_csbs_9001(api):
    call, headers = api
    r = call("POST", "/v1/demo/providers/not-the-provider/resources/action", json=items((WEB_1, SERVER)),
             headers=headers)
    assert error_of(r, 400, "CSBS.9001") == "provider invalid"


def test_unknown_keys_are_ignored(api):
    call, headers = api
    body = {"check_protectable": [{"resource_id": WEB_1, "resource_type": SERVER, "extra": 1}], "other": True}
    r = call("POST", ACTION, json=body, headers=headers)
    assert r.json() == {"protectable": [ok(WEB_1)]}


# --- auth ---------------------------------------------------------------------------------------------------


def test_missing_token_is_401(client, inventory, contract):
    r = client.post(ACTION, json=items((WEB_1, SERVER)))
    error_of(r, 401, "APIGW.0301")
    contract.check(r)


def test_unknown_token_is_401(client, inventory, contract):
    r = client.post(ACTION, json=items((WEB_1, SERVER)), headers={"X-Auth-Token": "forged"})
    error_of(r, 401, "APIGW.0301")
    contract.check(r)


def test_expired_and_revoked_tokens_are_401(client, runtime, inventory, make_token):
    expired, revoked = make_token(), make_token()
    from opencsbs.auth.local import token_digest

    with transaction(runtime.sessions) as s:
        s.query(LocalToken).filter_by(token_hash=token_digest(expired)).update(
            {"expires_at": utcnow() - timedelta(seconds=1)})
        s.query(LocalToken).filter_by(token_hash=token_digest(revoked)).update({"revoked": True})
    for token in (expired, revoked):
        r = client.post(ACTION, json=items((WEB_1, SERVER)), headers={"X-Auth-Token": token})
        assert "expired" in error_of(r, 401, "APIGW.0301")


def test_token_not_yet_expired_works(client, runtime, inventory):
    from opencsbs.auth.local import create_token

    with transaction(runtime.sessions) as s:
        token = create_token(s, "demo", "reader", expires_at=utcnow() + timedelta(hours=1))
    r = client.post(ACTION, json=items((WEB_1, SERVER)), headers={"X-Auth-Token": token})
    assert r.status_code == 200


def test_401_comes_before_bad_input(client, inventory):
    r = client.post("/v1/demo/providers/nope/resources/action", content=b"{", headers={"Content-Type": "application/json"})
    error_of(r, 401, "APIGW.0301")


def test_foreign_project_is_403(client, inventory, make_token, contract):
    for role in ("reader", "member"):
        r = client.post(ACTION, json=items((WEB_1, SERVER)), headers={"X-Auth-Token": make_token("other-project", role)})
        error_of(r, 403, "APIGW.0302")
        contract.check(r)
    r = client.get("/v1/demo/providers", headers={"X-Auth-Token": make_token("other-project")})
    error_of(r, 403, "APIGW.0302")


# --- routes, methods, sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v2/", "/v1/demo/nothing", f"/v1/demo/providers/{PROVIDER}/resources/x"])
def test_unknown_route_is_404_json(client, path):
    r = client.get(path)
    assert "does not exist" in error_of(r, 404, "APIGW.0101")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_json(api, method):
    call, headers = api
    r = call(method, ACTION, headers=headers, check=False)  # not an operation of the spec: docs/errors.md
    assert method in error_of(r, 405, "APIGW.0101")
    assert "POST" in r.headers["allow"]


def test_post_on_providers_is_405(api):
    call, headers = api
    r = call("POST", "/v1/demo/providers", json={}, headers=headers, check=False)
    error_of(r, 405, "APIGW.0101")


def test_body_over_limit_is_413(api):
    call, headers = api
    big = json.dumps(items(*[(WEB_1, SERVER)] * 20000)).encode()
    assert len(big) > 1024 * 1024
    r = call("POST", ACTION, content=big, headers={**headers, "Content-Type": "application/json"})
    assert "1048576" in error_of(r, 413, "APIGW.0201")


def test_chunked_body_over_limit_is_413(api):
    call, headers = api

    def chunks():
        yield b'{"check_protectable": ['
        for _ in range(20000):
            yield json.dumps({"resource_id": WEB_1, "resource_type": SERVER}).encode() + b","
        yield b"]}"

    r = call("POST", ACTION, content=chunks(), headers={**headers, "Content-Type": "application/json"})
    error_of(r, 413, "APIGW.0201")


# --- versions and providers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1", "/v1/"])
def test_version_v1(api, path):
    call, _ = api
    r = call("GET", path)
    assert r.status_code == 200
    v = r.json()["version"]
    assert v["id"] == "v1.0" and v["status"] == "CURRENT"
    assert v["links"][0]["href"].endswith("/v1/")
    assert v["media-types"][0]["base"] == "application/json"


def test_versions_root_needs_no_token(api):
    call, _ = api
    r = call("GET", "/")
    assert r.status_code == 200
    assert [v["id"] for v in r.json()["versions"]] == ["v1.0"]


def test_providers_list_and_show(api):
    call, headers = api
    r = call("GET", "/v1/demo/providers", headers=headers)
    providers = r.json()["providers"]
    assert [p["id"] for p in providers] == [PROVIDER]
    assert providers[0]["name"] == "CSBS"
    assert set(providers[0]["extended_info_schema"]["options_schema"]) == {SERVER, BMS}
    r = call("GET", f"/v1/demo/providers/{PROVIDER}", headers=headers)
    assert r.json() == {"provider": providers[0]}


def test_providers_marker_and_limit(api):
    call, headers = api
    assert call("GET", "/v1/demo/providers?limit=1", headers=headers).json()["providers"][0]["id"] == PROVIDER
    assert call("GET", "/v1/demo/providers?limit=0", headers=headers).json() == {"providers": []}
    assert call("GET", f"/v1/demo/providers?marker={PROVIDER}", headers=headers).json() == {"providers": []}
    r = call("GET", "/v1/demo/providers?marker=nope", headers=headers)
    assert "marker" in error_of(r, 400, "CSBS.9001")
    for bad in ("limit=-1", "limit=abc"):
        error_of(call("GET", f"/v1/demo/providers?{bad}", headers=headers), 400, "CSBS.9001")


def test_unknown_provider_show_is_404(api):
    call, headers = api
    r = call("GET", "/v1/demo/providers/nope", headers=headers)
    error_of(r, 404, "CSBS.9001")


def test_providers_need_a_token(client):
    error_of(client.get("/v1/demo/providers"), 401, "APIGW.0301")
    error_of(client.get(f"/v1/demo/providers/{PROVIDER}"), 401, "APIGW.0301")


# --- the OpenAPI document itself ----------------------------------------------------------------------------


def test_openapi_lists_what_is_served(client, contract):
    spec = contract.spec
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert set(paths) >= {"/", "/v1", "/v1/", "/v1/{project_id}/providers", "/v1/{project_id}/providers/{provider_id}",
                          "/v1/{project_id}/providers/{provider_id}/resources/action"}
    for operations in paths.values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
    action = paths["/v1/{project_id}/providers/{provider_id}/resources/action"]["post"]
    assert {"200", "400", "401", "403", "413"} <= set(action["responses"])
    body = spec["components"]["schemas"]["ResourceActionRequest"]
    assert body["oneOf"] == [{"required": ["check_protectable"]}, {"required": ["check_restorable"]}]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    item = spec["components"]["schemas"]["CheckResp"]
    assert set(item["required"]) == {"resource_id", "resource_type", "result"}
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-Auth-Token"


def test_openapi_rejects_a_wrong_answer(contract, api):
    """The contract check can fail: a response missing ``result`` does not conform."""
    call, headers = api
    r = call("POST", ACTION, json=items((WEB_1, SERVER)), headers=headers)
    import httpx

    forged = httpx.Response(200, json={"protectable": [{"resource_id": WEB_1, "resource_type": SERVER}]},
                            request=r.request)
    with pytest.raises(Exception):
        contract.check(forged)
