"""A trailing slash reaches the same route (no empty-bodied 307 redirect)."""

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"


def test_trailing_slash_is_the_same_route(demo):
    client, headers = demo
    plain = client.get("/v1/demo/policies", headers=headers)
    slashed = client.get("/v1/demo/policies/", headers=headers, follow_redirects=False)
    assert plain.status_code == slashed.status_code == 200
    assert slashed.json() == plain.json()

    body = {"check_protectable": [{"resource_id": WEB1, "resource_type": "OS::Nova::Server"}]}
    r = client.post(f"/v1/demo/providers/{PROVIDER}/resources/action/", json=body, headers=headers,
                    follow_redirects=False)
    assert r.status_code == 200
    assert r.json()["protectable"][0]["result"] is True


def test_versions_with_and_without_slash(client):
    assert client.get("/v1/").json() == client.get("/v1").json()
    assert client.get("/").json()["versions"][0]["id"] == "v1.0"


def test_unknown_route_with_slash_is_json_404(demo):
    client, headers = demo
    r = client.get("/v1/demo/nothing-here/", headers=headers, follow_redirects=False)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error_code"] == "APIGW.0101"
