"""HEAD on every GET route: the GET's status and headers, no body (RFC 9110 section 9.3.2)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from policy_helpers import PROVIDER, body, create

SAME_HEADERS = ("content-type", "content-length", "www-authenticate", "allow")
#: bodies that change from one call to the next (timings, counters): their length may differ between GET and HEAD
DYNAMIC = {"/readyz", "/metrics"}


def _get_paths(client) -> list[str]:
    doc = client.get("/openapi.json").json()
    return [path for path, ops in doc["paths"].items() if "get" in ops]


def _fill(path: str, ids: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        return {"project_id": "demo", "provider_id": PROVIDER}.get(name) or ids.get(name) or str(uuid.uuid4())

    return re.sub(r"\{(\w+)\}", one, path)


def _same_but_bodiless(client, url: str, headers: dict) -> httpx.Response:
    got = client.get(url, headers=headers)
    head = client.head(url, headers=headers)
    assert head.status_code == got.status_code, (url, head.status_code, got.status_code)
    assert head.content == b"", url
    for name in SAME_HEADERS:
        if name == "content-length" and url in DYNAMIC:
            continue
        assert head.headers.get(name) == got.headers.get(name), (url, name)
    return got


def test_head_on_every_get_route_with_and_without_token(demo):
    client, headers = demo
    policy = create(client, headers, body("head")).json()["policy"]
    paths = _get_paths(client)
    assert len(paths) >= 10
    statuses = set()
    for path in paths:
        for ids in ({"policy_id": policy["id"]}, {}):  # a known and an unknown id
            url = _fill(path, ids)
            statuses.add(_same_but_bodiless(client, url, headers).status_code)
            statuses.add(_same_but_bodiless(client, url, {}).status_code)  # no token
    assert {200, 401, 404} <= statuses


def test_head_cases(demo):
    client, headers = demo
    policy = create(client, headers, body("head")).json()["policy"]
    got = _same_but_bodiless(client, f"/v1/demo/policies/{policy['id']}", headers)
    assert got.status_code == 200 and int(got.headers["content-length"]) == len(got.content) > 0
    assert _same_but_bodiless(client, f"/v1/demo/policies/{uuid.uuid4()}", headers).status_code == 404
    r = _same_but_bodiless(client, "/v1/demo/checkpoint_items", {})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "X-Auth-Token"
    assert _same_but_bodiless(client, "/v1/demo/nothing-here", headers).status_code == 404
    # a path without GET: 405 naming HEAD, Allow unchanged
    r = client.head(f"/v1/demo/providers/{PROVIDER}/resources/action", headers=headers)
    assert r.status_code == 405 and r.content == b"" and r.headers["allow"] == "POST"
    r = client.request("PATCH", f"/v1/demo/providers/{PROVIDER}/resources/action", headers=headers)
    assert r.json()["error_msg"] == "The API does not support the method PATCH"
    # a GET path lists HEAD among its methods
    r = client.post("/v1/demo/providers", json={}, headers=headers)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path,token,status", [("/v1/demo/policies", True, 200), ("/v1/demo/quotas", False, 401),
                                               (f"/v1/demo/policies/{uuid.uuid4()}", True, 404)])
def test_head_over_a_real_socket(runtime, live_server, make_token, path, token, status):
    headers = {"X-Auth-Token": make_token("demo")} if token else {}
    with httpx.Client(base_url=live_server, timeout=30) as http:
        got, head = http.get(path, headers=headers), http.head(path, headers=headers)
    assert got.status_code == head.status_code == status
    assert head.content == b"" and head.headers["content-length"] == got.headers["content-length"]
