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
PUBLIC = {("get", "/"), ("get", "/v1"), ("get", "/v1/"), ("get", "/opencsbs/v1/auth")}
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
    from opencsbs.runtime import Runtime

    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    keystone_settings(settings, env)
    rt = Runtime.from_settings(settings, migrate=False)
    try:
        alpha, beta = env["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"], env["OPENCSBS_TEST_KEYSTONE_PROJECT_BETA"]
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            n = sweep(c, alpha, issue_token(env, "csbs-member", "csbs-alpha"), beta,
                      issue_token(env, "csbs-other", "csbs-beta"), set())
        assert n >= 2
    finally:
        rt.close()
