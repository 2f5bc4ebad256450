"""The console's extension routes (docs/console.md): ``GET /opencsbs/v1/{project_id}/servers``,
``GET /opencsbs/v1/auth``, ``POST /opencsbs/v1/auth/tokens`` (with the real Keystone of
scripts/services/keystone.sh), and the console's own files under ``/console/``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conftest import require_component

DEMO_SERVERS = ["bms-1", "broken-1", "cluster-a", "db-1", "diskless-1", "dss-1", "gone-1", "paused-1", "remote-1",
                "resizing-1", "web-1"]


def test_servers_lists_the_projects_servers_sorted_by_name(demo, runtime):
    client, headers = demo
    before = runtime.driver.calls
    r = client.get("/opencsbs/v1/demo/servers", headers=headers)
    assert r.status_code == 200, r.text
    servers = r.json()["servers"]
    assert [s["name"] for s in servers] == DEMO_SERVERS  # secret-1 belongs to other-project
    assert runtime.driver.calls - before == 2  # one listing, one get_servers, whatever the number of servers
    web = next(s for s in servers if s["name"] == "web-1")
    assert web["resource_type"] == "OS::Nova::Server" and web["status"] == "ACTIVE"
    assert [(v["name"], v["size_gb"], v["bootable"]) for v in web["volumes"]] == [
        ("web-1-sys", 1, True), ("web-1-data", 1, False)]
    bms = next(s for s in servers if s["name"] == "bms-1")
    assert bms["resource_type"] == "OS::Ironic::BareMetalServer"


def test_servers_pages_with_marker_and_limit(demo):
    client, headers = demo
    first = client.get("/opencsbs/v1/demo/servers?limit=4", headers=headers).json()["servers"]
    assert [s["name"] for s in first] == DEMO_SERVERS[:4]
    rest = client.get(f"/opencsbs/v1/demo/servers?marker={first[-1]['id']}", headers=headers).json()["servers"]
    assert [s["name"] for s in rest] == DEMO_SERVERS[4:]
    r = client.get("/opencsbs/v1/demo/servers?marker=nope", headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    r = client.get("/opencsbs/v1/demo/servers?limit=0", headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"


def test_servers_of_another_project_are_refused(demo, make_token):
    client, _ = demo
    other = {"X-Auth-Token": make_token("other-project", "member")}
    r = client.get("/opencsbs/v1/demo/servers", headers=other)
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0302"
    assert [s["name"] for s in client.get("/opencsbs/v1/other-project/servers", headers=other).json()["servers"]] \
        == ["secret-1"]
    assert client.get("/opencsbs/v1/demo/servers").status_code == 401


def test_auth_mode_and_login_in_local_mode(client):
    assert client.get("/opencsbs/v1/auth").json() == {"mode": "local"}
    r = client.post("/opencsbs/v1/auth/tokens", json={"auth": {"username": "u", "password": "p", "project": "x"}})
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001" and "local" in r.json()["error_msg"]


def test_console_files_are_served_with_a_same_origin_policy(client):
    for url in ("/console", "/console/"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/console/js/app.js">' in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
    r = client.get("/console/js/app.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/console/js/nope.js").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/console") for p in paths)
    assert {"/opencsbs/v1/auth", "/opencsbs/v1/auth/tokens", "/opencsbs/v1/{project_id}/servers"} <= paths.keys()


@pytest.mark.keystone
def test_keystone_login_gives_a_token_the_api_accepts(settings):
    from identity_support import keystone_available, keystone_env, keystone_settings

    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    keystone_settings(settings, env)
    rt = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            assert c.get("/opencsbs/v1/auth").json() == {"mode": "keystone"}
            login = {"username": "csbs-member", "password": env["OPENCSBS_TEST_KEYSTONE_PASSWORD"],
                     "project": "csbs-alpha"}
            r = c.post("/opencsbs/v1/auth/tokens", json={"auth": login})
            assert r.status_code == 200, r.text
            token = r.json()["token"]
            assert token["project_id"] == env["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
            assert token["project_name"] == "csbs-alpha" and token["expires_at"].endswith("Z")
            r = c.get(f"/v1/{token['project_id']}/providers", headers={"X-Auth-Token": token["id"]})
            assert r.status_code == 200, r.text
            # the project given by id works too
            r = c.post("/opencsbs/v1/auth/tokens", json={"auth": {**login, "project": token["project_id"]}})
            assert r.status_code == 200 and r.json()["token"]["project_id"] == token["project_id"]
            for bad in ({**login, "password": "wrong"}, {**login, "project": "csbs-beta"},
                        {**login, "username": "nobody"}):
                r = c.post("/opencsbs/v1/auth/tokens", json={"auth": bad})
                assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301", r.text
                assert env["OPENCSBS_TEST_KEYSTONE_PASSWORD"] not in r.text
    finally:
        rt.close()


def test_keystone_login_when_keystone_is_down_answers_503(settings):
    from conftest import free_port
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    settings.auth.mode = "keystone"
    settings.auth.keystone_url = f"http://127.0.0.1:{free_port()}/v3"  # nothing listens there
    settings.auth.service_username, settings.auth.service_password = "opencsbs", "x"
    settings.auth.service_project_name = "service"
    settings.auth.keystone_timeout = 3
    rt = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            r = c.post("/opencsbs/v1/auth/tokens",
                       json={"auth": {"username": "u", "password": "secret-pw", "project": "p"}})
            assert r.status_code == 503 and r.json()["error_code"] == "CSBS.9999", r.text
            assert "secret-pw" not in r.text
            r = c.post("/opencsbs/v1/auth/tokens", json={"auth": {"username": "u", "password": 1, "project": "p"}})
            assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    finally:
        rt.close()
