"""The command line as a client through Keystone: ``--os-cloud NAME`` (``OS_CLOUD``) reads the clouds.yaml entry
NAME (openstacksdk's loader; ``OS_CLIENT_CONFIG_FILE`` points at the test's file), logs in to the real Keystone
of ``scripts/services/keystone.sh`` and asks a keystone-mode ``opencsbs serve`` (no fake identity server)."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner
from identity_support import keystone_available, keystone_env

from conftest import require_component
from opencsbs.cli import main
from test_cli_remote import start_serve

pytestmark = [pytest.mark.keystone, pytest.mark.slow]

SERVER = "6507cb66-90dc-4a12-a573-c9f3398f899d"
VOLUME = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01"


@pytest.fixture(scope="module")
def ks() -> dict[str, str]:
    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    return env


def _clouds(tmp_path, ks, override: str | None = None, password: str | None = None) -> str:
    """A clouds.yaml with the entry ``alpha`` (csbs-member on csbs-alpha); returns its path."""
    entry = {"auth": {"auth_url": ks["OPENCSBS_TEST_KEYSTONE_URL"], "username": "csbs-member",
                      "password": password or ks["OPENCSBS_TEST_KEYSTONE_PASSWORD"], "project_name": "csbs-alpha",
                      "user_domain_id": "default", "project_domain_id": "default"},
             "identity_api_version": 3}
    if override:
        entry["data_protect_endpoint_override"] = override
    path = tmp_path / f"clouds-{len(list(tmp_path.glob('clouds-*')))}.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"alpha": entry}}))
    return str(path)


def _cli(clouds: str, *args, cloud_env: bool = False):
    env = {"OS_CLIENT_CONFIG_FILE": clouds, "OS_CLOUD": "alpha" if cloud_env else None,
           "OPENCSBS_URL": None, "OPENCSBS_TOKEN": None}
    head = [] if cloud_env else ["--os-cloud", "alpha"]
    return CliRunner(env=env).invoke(main, ["--database-url", "postgresql://nobody@127.0.0.1:1/none", *head, *args],
                                     prog_name="opencsbs")


def test_the_endpoint_and_project_come_from_the_token_catalog(ks, tmp_path, monkeypatch):
    from opencsbs.cli.remote import keystone_remote

    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", _clouds(tmp_path, ks))
    remote = keystone_remote("alpha", None)
    # the catalog's data-protect endpoint is http://127.0.0.1:$CSBS_PORT/v1/$(project_id)s (keystone.sh)
    assert remote.url == f"http://127.0.0.1:{ks['OPENCSBS_TEST_KEYSTONE_CSBS_PORT']}"
    assert remote.project == alpha
    remote.close()


def test_a_keystone_user_backs_up_and_lists_through_clouds_yaml(ks, tmp_path, database_url):
    alpha = ks["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    data = tmp_path / "served"
    state = ["--data-dir", str(data), "--database-url", database_url]
    inventory = tmp_path / "alpha.yaml"
    inventory.write_text(yaml.safe_dump({"projects": {alpha: {"servers": [{
        "id": SERVER, "name": "web-1", "status": "ACTIVE", "availability_zone": "az1",
        "volumes": [{"id": VOLUME, "size_gb": 1, "bootable": True}]}]}}}))
    loaded = CliRunner().invoke(main, [*state, "sandbox", "load", str(inventory)])
    assert loaded.exit_code == 0, loaded.output
    url, stop = start_serve(tmp_path, state, {
        "OPENCSBS_AUTH__MODE": "keystone", "OPENCSBS_AUTH__KEYSTONE_URL": ks["OPENCSBS_TEST_KEYSTONE_URL"],
        "OPENCSBS_AUTH__SERVICE_USERNAME": "opencsbs",
        "OPENCSBS_AUTH__SERVICE_PASSWORD": ks["OPENCSBS_TEST_KEYSTONE_PASSWORD"],
        "OPENCSBS_AUTH__SERVICE_PROJECT_NAME": "service"})
    try:
        clouds = _clouds(tmp_path, ks, override=f"{url}/v1/{alpha}")
        made = _cli(clouds, "backup", SERVER, "--wait")
        assert made.exit_code == 0, made.output
        item = made.stdout.strip().splitlines()[-1]
        listed = _cli(clouds, "backup", "list", "-f", "value", "-c", "id", "-c", "status", cloud_env=True)
        assert listed.exit_code == 0, listed.output
        assert listed.stdout.split() == [item, "available"]
        checked = json.loads(_cli(clouds, "check", SERVER, "--json").stdout)
        assert checked[0]["result"] is True

        other = _cli(clouds, "backup", "list", "--project", "someone-else")
        assert other.exit_code == 2 and "is not the project of cloud 'alpha'" in other.output
        refused = _cli(_clouds(tmp_path, ks, override=f"{url}/v1/{alpha}", password="wrong"), "backup", "list")
        assert refused.exit_code == 1 and refused.output.startswith("Error: cannot log in with cloud 'alpha'")
        assert len(refused.output.strip().splitlines()) == 1 and "wrong" not in refused.output
        # without clouds.yaml: log in through opencsbs itself, then use the token with --url
        login = CliRunner(env={"OS_PASSWORD": ks["OPENCSBS_TEST_KEYSTONE_PASSWORD"]}).invoke(
            main, ["--url", url, "token", "login", "--username", "csbs-member", "--project", "csbs-alpha"])
        assert login.exit_code == 0, login.output
        assert f"for project csbs-alpha ({alpha})" in login.stderr
        token = login.stdout.strip().splitlines()[-1]
        by_url = CliRunner().invoke(main, ["--url", url, "--token", token, "backup", "list", "--project", alpha,
                                           "-f", "value", "-c", "id"])
        assert by_url.exit_code == 0 and by_url.stdout.split() == [item]
        wrong = CliRunner().invoke(main, ["--url", url, "token", "login", "--username", "csbs-member",
                                          "--project", "csbs-alpha", "--password", "nope"])
        assert wrong.exit_code == 1 and wrong.output.startswith("Error: APIGW.0301") and "nope" not in wrong.output
        local = CliRunner().invoke(main, ["--url", url, "token", "create", "--project", alpha])
        assert local.exit_code == 2 and "no API" in local.output

        unknown = CliRunner(env={"OS_CLIENT_CONFIG_FILE": clouds}).invoke(
            main, ["--os-cloud", "nope", "backup", "list"])
        assert unknown.exit_code == 2 and "clouds.yaml" in unknown.output and "Traceback" not in unknown.output
    finally:
        stop()
