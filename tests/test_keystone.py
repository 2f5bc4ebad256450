"""Keystone mode against the real Keystone of ``scripts/services/keystone.sh`` (no fake identity server).

Users (see the script): csbs-reader / csbs-member / csbs-admin on project csbs-alpha, csbs-other (member) on
csbs-beta, the service user opencsbs.
"""

from __future__ import annotations

import logging
import time

import pytest
import yaml
from fastapi.testclient import TestClient
from identity_support import (
    issue_token,
    keystone_available,
    keystone_env,
    keystone_settings,
    revoke_token,
)

from conftest import require_component
from opencsbs.db.base import transaction

pytestmark = pytest.mark.keystone

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
SERVER = "6507cb66-90dc-4a12-a573-c9f3398f899d"


@pytest.fixture(scope="module")
def ks() -> dict[str, str]:
    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    return env


@pytest.fixture(scope="module")
def tokens(ks) -> dict[str, str]:
    return {
        "reader": issue_token(ks, "csbs-reader", "csbs-alpha"),
        "member": issue_token(ks, "csbs-member", "csbs-alpha"),
        "admin": issue_token(ks, "csbs-admin", "csbs-alpha"),
        "other": issue_token(ks, "csbs-other", "csbs-beta"),
    }


def _load_alpha_inventory(runtime, tmp_path, alpha: str) -> None:
    from opencsbs.clouds.sandbox.inventory import load_inventory_file

    inv = tmp_path / "alpha.yaml"
    inv.write_text(yaml.safe_dump({"projects": {alpha: {"servers": [{
        "id": SERVER, "name": "web-1", "status": "ACTIVE", "availability_zone": "az1",
        "volumes": [{"id": "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01", "size_gb": 1, "bootable": True}],
    }]}}}))
    with transaction(runtime.sessions) as session:
        load_inventory_file(session, inv, runtime.settings.volumes_dir)


@pytest.fixture
def ks_runtime(settings, ks, tmp_path):
    from opencsbs.bootstrap import build_runtime

    keystone_settings(settings, ks, cache_seconds=2)
    rt = build_runtime(settings, migrate=False)
    _load_alpha_inventory(rt, tmp_path, ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"])
    yield rt
    rt.close()


@pytest.fixture
def ks_client(ks_runtime):
    from opencsbs.api.app import create_app

    with TestClient(create_app(ks_runtime), raise_server_exceptions=False) as c:
        yield c


def _check(client, project: str, token: str | None):
    headers = {"X-Auth-Token": token} if token is not None else {}
    return client.post(
        f"/v1/{project}/providers/{PROVIDER}/resources/action",
        json={"check_protectable": [{"resource_id": SERVER, "resource_type": "OS::Nova::Server"}]},
        headers=headers,
    )


def test_member_reader_and_admin_of_the_project_are_served(ks_client, ks, tokens):
    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    for who in ("reader", "member", "admin"):
        r = _check(ks_client, alpha, tokens[who])
        assert r.status_code == 200, (who, r.text)
        assert r.json() == {"protectable": [{"resource_id": SERVER, "resource_type": "OS::Nova::Server",
                                             "result": True}]}
        r = ks_client.get(f"/v1/{alpha}/providers", headers={"X-Auth-Token": tokens[who]})
        assert r.status_code == 200 and r.json()["providers"][0]["id"] == PROVIDER


def test_token_of_another_project_is_forbidden(ks_client, ks, tokens):
    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    r = _check(ks_client, alpha, tokens["other"])
    assert r.status_code == 403
    assert r.json()["error_code"] == "APIGW.0302"
    assert SERVER not in r.text
    # the admin of alpha is admin of alpha only: beta is another project (docs/keystone.md, context_is_admin)
    beta = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_BETA"]
    r = _check(ks_client, beta, tokens["admin"])
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0302"


def test_missing_and_unknown_tokens_are_refused(ks_client, ks):
    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    for token in (None, "", "gAAAAABnot-a-real-token", "x" * 9000, "with space"):
        r = _check(ks_client, alpha, token)
        assert r.status_code == 401, (token, r.text)
        assert r.json()["error_code"] == "APIGW.0301"
        assert r.headers["content-type"].startswith("application/json")


def test_revoked_token_is_refused_once_the_cache_entry_lapses(ks_client, ks):
    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    token = issue_token(ks, "csbs-member", "csbs-alpha")
    assert _check(ks_client, alpha, token).status_code == 200
    revoke_token(ks, token)
    time.sleep(2.2)  # the fixture's cache_seconds is 2
    r = _check(ks_client, alpha, token)
    assert r.status_code == 401
    assert r.json()["error_code"] == "APIGW.0301"


def test_expired_token_is_refused_even_when_cached(ks_runtime, ks, tokens):
    """A cache entry never outlives the token's ``expires_at`` (Keystone's own 404 covers the uncached case)."""
    from datetime import timedelta

    from opencsbs.auth.base import AuthFailed
    from opencsbs.auth.keystone import _Entry, _utcnow

    auth = ks_runtime.authenticator
    principal = auth.authenticate(tokens["member"])
    import hashlib

    key = hashlib.sha256(tokens["member"].encode()).hexdigest()
    auth._store(key, _Entry(principal, _utcnow() - timedelta(seconds=1)))
    with pytest.raises(AuthFailed):
        auth.authenticate(tokens["member"])


def test_principal_carries_project_roles_and_the_callers_token(ks_runtime, ks, tokens):
    auth = ks_runtime.authenticator
    p = auth.authenticate(tokens["reader"])
    assert p.project_id == ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    assert "reader" in p.roles and "member" not in p.roles and not ks_runtime.enforcer.is_cloud_admin(p)
    assert p.auth_token == tokens["reader"]
    assert tokens["reader"] not in repr(p)
    p = auth.authenticate(tokens["admin"])
    assert {"admin", "member", "reader"} <= p.roles  # Keystone's implied roles


def test_validations_are_cached(ks_runtime, tokens):
    auth = ks_runtime.authenticator
    calls = []
    real = auth._validate
    auth._validate = lambda t: calls.append(1) or real(t)
    for _ in range(5):
        auth.authenticate(tokens["member"])
    for _ in range(3):
        with pytest.raises(Exception):
            auth.authenticate("gAAAAAB-refused-token")
    assert len(calls) <= 2


def test_keystone_unreachable_is_a_503_with_a_json_body(settings, ks, tmp_path):
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    keystone_settings(settings, ks)
    settings.auth.keystone_url = "http://127.0.0.1:9/v3"  # discard port: nothing listens
    settings.auth.keystone_timeout = 3
    rt = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            r = _check(c, "p1", "gAAAAAB-some-token")
        assert r.status_code == 503
        assert r.json()["error_code"] == "CSBS.9999"
        assert "some-token" not in r.text
    finally:
        rt.close()


def test_wrong_service_password_is_a_503_not_a_401(settings, ks):
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    keystone_settings(settings, ks)
    settings.auth.service_password = "not-the-password"
    rt = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            r = _check(c, ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"], issue_token(ks, "csbs-member", "csbs-alpha"))
        assert r.status_code == 503
        assert r.json()["error_code"] == "CSBS.9999"
        assert "not-the-password" not in r.text
    finally:
        rt.close()


def test_tokens_and_secrets_never_reach_logs_or_bodies(settings, ks, caplog, tmp_path):
    """Everything logged at DEBUG (keystoneauth1 included) while good, bad and unjudgeable tokens pass."""
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    good = issue_token(ks, "csbs-member", "csbs-alpha")
    bad = "gAAAAABbad-token-" + "q" * 40
    bodies = []
    caplog.set_level(logging.DEBUG)
    keystone_settings(settings, ks)
    rt = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            for token in (good, bad, good):
                bodies.append(_check(c, alpha, token).text)
            bodies.append(c.post(f"/v1/{alpha}/providers/{PROVIDER}/resources/action", content=b"{not json",
                                 headers={"X-Auth-Token": good}).text)
    finally:
        rt.close()
    settings.auth.keystone_url = "http://127.0.0.1:9/v3"
    settings.auth.keystone_timeout = 2
    rt = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            bodies.append(_check(c, alpha, good).text)
    finally:
        rt.close()
    assert any("keystoneauth" in r.name for r in caplog.records), "keystoneauth1 debug logging was not captured"
    text = caplog.text + "".join(bodies)
    for secret in (good, bad, ks["OPENCSBS_TEST_KEYSTONE_PASSWORD"]):
        assert secret not in text
        assert secret[:32] not in text
