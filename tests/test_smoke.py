PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def test_check_protectable_example(demo):
    client, headers = demo
    r = client.post(
        f"/v1/demo/providers/{PROVIDER}/resources/action",
        json={"check_protectable": [{"resource_id": "6507cb66-90dc-4a12-a573-c9f3398f899d",
                                     "resource_type": "OS::Nova::Server"}]},
        headers=headers,
    )
    assert r.status_code == 200
    assert r.json() == {"protectable": [{"resource_id": "6507cb66-90dc-4a12-a573-c9f3398f899d",
                                         "resource_type": "OS::Nova::Server", "result": True}]}
