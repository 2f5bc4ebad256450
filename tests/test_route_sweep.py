"""Every route of the OpenAPI document, with no token and with a token of another project.

- no token (and a malformed one): 401 with the gateway body, on every route but the version documents;
- a token of another project on this project's URLs: 403 or 404, an error body, nothing of this project;
- a token of another project on its own URLs, naming this project's resource ids: 403/404/400 or a result
  that does not carry this project's data.

Runs with local tokens always, and with Keystone tokens when the Keystone of scripts/services/keystone.sh runs.
New routes are swept automatically: there is no per-route list to keep up to date.
"""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient

from conftest import require_component
from opencsbs.db.base import transaction

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
#: routes that need no token: the version documents only
PUBLIC = {("get", "/"), ("get", "/v1"), ("get", "/v1/"), ("get", "/opencsbs/v1/auth"),
          ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
#: the console's login takes credentials, not a token: without them it is a 400, never a 401 nor a 2xx
LOGIN = {("post", "/opencsbs/v1/auth/tokens")}
METHODS = ("get", "post", "put", "patch", "delete")


def _routes(client) -> list[tuple[str, str, dict]]:
    doc = client.get("/openapi.json").json()
    return [(m, path, op) for path, ops in doc["paths"].items() for m, op in ops.items() if m in METHODS]


def _fill(path: str, project: str, ids: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name == "project_id":
            return project
        if name == "provider_id":
            return PROVIDER
        return ids.get(name, str(uuid.uuid4()))

    return re.sub(r"\{(\w+)\}", one, path)


def _call(client, method: str, url: str, token: str | None, body: object | None = None):
    headers = {"X-Auth-Token": token} if token is not None else {}
    if method in ("post", "put", "patch"):
        return client.request(method.upper(), url, headers=headers, json=body if body is not None else {})
    return client.request(method.upper(), url, headers=headers)


def _own_data(client, routes, project: str, token: str) -> tuple[set[str], dict[str, str]]:
    """Ids the project's own token can see (list routes), to look for in the other project's answers."""
    seen: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("id", "resource_id", "checkpoint_id", "policy_id", "provider_id") and isinstance(v, str):
                    seen.add(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for method, path, _op in routes:
        if method == "get" and re.fullmatch(r"/v1/\{project_id\}/[\w/]+", path.replace("{provider_id}", "p")):
            r = _call(client, method, _fill(path, project, {}), token)
            if r.status_code == 200:
                walk(r.json())
    seen.discard(PROVIDER)  # the provider is the same for everyone
    return seen, {}


def sweep(client, own_project: str, own_token: str, other_project: str, other_token: str,
          own_resource_ids: set[str]) -> int:
    routes = _routes(client)
    assert routes, "the OpenAPI document lists no routes"
    unauthenticated = {(m, p) for m, p, _ in routes if (m, p) not in PUBLIC | LOGIN}
    assert all("{project_id}" in p for _, p in unauthenticated), "a route outside /v1/{project_id} needs a token"
    seen, _ = _own_data(client, routes, own_project, own_token)
    secrets = (seen | own_resource_ids) - {""}
    checked = 0
    for method, path, _op in routes:
        if (method, path) in PUBLIC:
            assert _call(client, method, _fill(path, own_project, {}), None).status_code < 400
            continue
        if (method, path) in LOGIN:
            r = _call(client, method, path, None)
            assert r.status_code == 400 and set(r.json()) == {"error_code", "error_msg"}, (method, path, r.text)
            continue
        url = _fill(path, own_project, {})
        for token in (None, "", "not-a-token"):
            r = _call(client, method, url, token)
            assert r.status_code == 401, (method, path, token, r.status_code, r.text)
            assert r.json()["error_code"] == "APIGW.0301", (method, path)
        r = _call(client, method, url, other_token)
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error_code", "error_msg"}, (method, path, body)
        assert own_project not in r.text and not any(s in r.text for s in secrets), (method, path, r.text)
        # the other project's own URL with this project's ids in every id slot
        for rid in sorted(own_resource_ids | seen) or [str(uuid.uuid4())]:
            ids = {name: rid for name in re.findall(r"\{(\w+)\}", path) if name not in ("project_id", "provider_id")}
            if not ids:
                break
            r = _call(client, method, _fill(path, other_project, ids), other_token)
            assert r.status_code != 200 or not any(s in r.text for s in secrets - {rid}), (method, path, r.text)
            assert r.status_code in (200, 400, 403, 404, 409), (method, path, r.status_code, r.text)
        checked += 1
    return checked


def test_sweep_with_local_tokens(client, make_token, inventory):
    from opencsbs.clouds.sandbox.inventory import list_servers

    with transaction(client.app.state.runtime.sessions) as s:
        ids = {srv.id for srv in list_servers(s, "demo")}
    own, other = make_token("demo", "member"), make_token("intruder", "member")
    assert sweep(client, "demo", own, "intruder", other, ids) >= 2
    # an admin-free reader of the other project is refused the same way
    assert sweep(client, "demo", own, "intruder", make_token("intruder", "reader"), ids) >= 2


@pytest.mark.keystone
def test_sweep_with_keystone_tokens(settings, tmp_path):
    from identity_support import issue_token, keystone_available, keystone_env, keystone_settings

    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    keystone_settings(settings, env)
    rt = build_runtime(settings, migrate=False)
    try:
        alpha, beta = env["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"], env["OPENCSBS_TEST_KEYSTONE_PROJECT_BETA"]
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            n = sweep(c, alpha, issue_token(env, "csbs-member", "csbs-alpha"), beta,
                      issue_token(env, "csbs-other", "csbs-beta"), set())
        assert n >= 2
    finally:
        rt.close()


def cloud_admin_sweep(client, project: str, own_token: str, admin_token: str) -> int:
    """Every route of ``project`` called with the project's own admin and with a cloud admin of no project (or of
    the admin project): the cloud admin gets what the project's admin gets, never 401/403, and reads the same
    data. Returns the number of routes compared."""
    compared = 0
    for method, path, _op in _routes(client):
        if (method, path) in PUBLIC or "{project_id}" not in path:
            continue
        url = _fill(path, project, {})
        mine = _call(client, method, url, own_token)
        theirs = _call(client, method, url, admin_token)
        assert theirs.status_code not in (401, 403), (method, path, theirs.status_code, theirs.text)
        if mine.status_code == 403 and mine.json()["error_code"] == "APIGW.0302":
            continue  # an admin-only rule (csbs:locks:write) the project's member lacks: the cloud admin has it
        assert theirs.status_code == mine.status_code, (method, path, mine.text, theirs.text)
        if method == "get" and mine.status_code == 200:
            assert theirs.json() == mine.json(), (method, path)
        compared += 1
    return compared


def _seed_policy(client, project: str, token: str) -> str:
    from policy_helpers import body

    name = "sweep-" + uuid.uuid4().hex[:8]
    r = client.post(f"/v1/{project}/policies", json=body(name=name, resources=()), headers={"X-Auth-Token": token})
    assert r.status_code == 200, r.text
    return r.json()["policy"]["id"]


def test_a_project_admin_is_admin_of_its_own_project_only(client, make_token, inventory):
    """An ``admin`` token of project intruder: 403/404 and nothing of demo on every route (was: everything)."""
    from opencsbs.clouds.sandbox.inventory import list_servers

    with transaction(client.app.state.runtime.sessions) as s:
        ids = {srv.id for srv in list_servers(s, "demo")}
    own = make_token("demo", "member")
    ids.add(_seed_policy(client, "demo", own))
    assert sweep(client, "demo", own, "intruder", make_token("intruder", "admin"), ids) >= 10
    # all_tenants is the cloud admin's too
    r = client.get("/v1/intruder/policies?all_tenants=1", headers={"X-Auth-Token": make_token("intruder", "admin")})
    assert r.status_code == 403, r.text


def test_a_local_cloud_admin_acts_on_every_project(client, make_token, inventory):
    """``opencsbs token create --cloud-admin`` (a system-scoped local token): every route of demo, as demo's admin."""
    from opencsbs.auth.local import create_token

    own = make_token("demo", "admin")
    pid = _seed_policy(client, "demo", own)
    with transaction(client.app.state.runtime.sessions) as s:
        cloud = create_token(s, None, cloud_admin=True)
    assert cloud_admin_sweep(client, "demo", own, cloud) >= 10
    r = client.get("/v1/demo/policies", headers={"X-Auth-Token": cloud})
    assert [p["id"] for p in r.json()["policies"]] == [pid]
    r = client.get("/v1/elsewhere/policies?all_tenants=1", headers={"X-Auth-Token": cloud})
    assert pid in [p["id"] for p in r.json()["policies"]]


def test_the_admin_project_is_what_the_operator_configures(settings, inventory, tmp_path):
    """``auth.admin_project_id``: its admins act everywhere, its members do not; the policy file can narrow
    ``context_is_admin`` to system scope only, which takes the admin project's rights away."""
    import yaml

    from opencsbs.api.app import create_app
    from opencsbs.auth.local import create_token
    from opencsbs.clouds.sandbox.inventory import load_inventory_file
    from opencsbs.bootstrap import build_runtime

    settings.auth.admin_project_id = "ops"
    for narrowed in (False, True):
        if narrowed:
            f = tmp_path / "policy.yaml"
            f.write_text(yaml.safe_dump({"context_is_admin": "role:admin and system_scope:all"}))
            settings.auth.policy_file = f
        rt = build_runtime(settings, migrate=False)
        try:
            with transaction(rt.sessions) as s:
                if not narrowed:
                    load_inventory_file(s, inventory, rt.settings.volumes_dir)
                own, ops_admin, ops_member = (create_token(s, "demo", "admin"), create_token(s, "ops", "admin"),
                                              create_token(s, "ops", "member"))
            with TestClient(create_app(rt), raise_server_exceptions=False) as c:
                _seed_policy(c, "demo", own)
                if narrowed:
                    assert sweep(c, "demo", own, "ops", ops_admin, set()) >= 10
                else:
                    assert cloud_admin_sweep(c, "demo", own, ops_admin) >= 10
                assert sweep(c, "demo", own, "ops", ops_member, set()) >= 10
        finally:
            rt.close()


@pytest.mark.keystone
def test_keystone_project_admin_and_cloud_admins(settings, tmp_path):
    """Against the real Keystone: csbs-admin (admin of csbs-alpha) gets nothing of csbs-beta on any route; the
    bootstrap admin with a system-scoped token (system: all) is a cloud admin, and so is the admin of the project
    ``admin`` once ``auth.admin_project_name`` names it, not before."""
    from identity_support import issue_system_token, issue_token, keystone_available, keystone_env, keystone_settings

    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    keystone_settings(settings, env, cache_seconds=0)
    alpha, beta = env["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"], env["OPENCSBS_TEST_KEYSTONE_PROJECT_BETA"]
    beta_member = issue_token(env, "csbs-other", "csbs-beta")
    alpha_admin = issue_token(env, "csbs-admin", "csbs-alpha")
    system_admin = issue_system_token(env, "admin")
    admin_project_admin = issue_token(env, "admin", "admin")
    for admin_project in (None, "admin"):
        settings.auth.admin_project_name = admin_project
        rt = build_runtime(settings, migrate=False)
        try:
            with TestClient(create_app(rt), raise_server_exceptions=False) as c:
                own = beta_member
                pid = _seed_policy(c, beta, own)
                assert sweep(c, beta, own, alpha, alpha_admin, {pid}) >= 10
                assert cloud_admin_sweep(c, beta, own, system_admin) >= 10
                if admin_project:
                    assert cloud_admin_sweep(c, beta, own, admin_project_admin) >= 10
                else:
                    r = c.get(f"/v1/{beta}/policies", headers={"X-Auth-Token": admin_project_admin})
                    assert r.status_code == 403, r.text
                r = c.delete(f"/v1/{beta}/policies/{pid}", headers={"X-Auth-Token": system_admin})
                assert r.status_code == 200, r.text
        finally:
            rt.close()
