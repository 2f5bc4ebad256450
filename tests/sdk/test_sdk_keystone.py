"""The real client in password mode: huaweicloud-sdk-python 1.0.28 logs in to the real Keystone of
``scripts/services/keystone.sh``, finds opencsbs in its token's catalog (service type ``data-protect``) and asks
check_protectable, with the same checks as in token mode (``test_sdk_protectable.py``).

opencsbs runs in keystone mode on the fixed port the catalog names (``OPENCSBS_TEST_KEYSTONE_CSBS_PORT``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml
from identity_support import keystone_available, keystone_env, keystone_settings

from conftest import require_component
from opencsbs.db.base import transaction

pytestmark = [pytest.mark.sdk, pytest.mark.keystone]

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
BROKEN_1 = "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003"
DSS_1 = "7ade8b7f-bd5f-40c3-8fa6-8b1a9a7b0008"
SECRET_1 = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sandbox.yaml"

CHECK = """
import json, os, sys
from openstack import connection, exceptions
from openstack.csbs.v1 import resource as csbs_resource

conn = connection.Connection(auth_url=os.environ["KS_URL"], username=os.environ["KS_USER"],
                             password=os.environ["KS_PASSWORD"], project_name=os.environ["KS_PROJECT"],
                             user_domain_id="default", project_domain_id="default", region_name="RegionOne")
endpoint = conn.session.get_endpoint(service_type="data-protect", interface="public")
items = json.loads(os.environ["ITEMS"])
query = csbs_resource.ResourceBackupCapability.new(provider_id=os.environ["PROVIDER"], check_protectable=items)
try:
    answer = query.create(conn.session, prepend_key=False)
except exceptions.HttpException as exc:
    print(json.dumps({"endpoint": endpoint, "status": exc.http_status, "code": exc.code}))
    sys.exit(0)
print(json.dumps({"endpoint": endpoint, "protectable": answer.protectable}))
"""


@pytest.fixture
def ks_server(settings, tmp_path):
    """opencsbs in keystone mode on the catalog's port, the example inventory loaded into project csbs-alpha."""
    import uvicorn

    from opencsbs.api.app import create_app
    from opencsbs.clouds.sandbox.inventory import load_inventory_file
    from opencsbs.bootstrap import build_runtime

    env = keystone_env()
    require_component(keystone_available(env), "Keystone not running (scripts/services/keystone.sh start)")
    keystone_settings(settings, env)
    alpha = env["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    inv = yaml.safe_load(EXAMPLE.read_text())
    inv["projects"] = {alpha: inv["projects"]["demo"]}
    path = tmp_path / "alpha.yaml"
    path.write_text(yaml.safe_dump(inv))
    rt = build_runtime(settings, migrate=False)
    with transaction(rt.sessions) as session:
        load_inventory_file(session, path, rt.settings.volumes_dir)
    port = int(env.get("OPENCSBS_TEST_KEYSTONE_CSBS_PORT", "35399"))
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            rt.close()
            pytest.fail(f"opencsbs did not start on port {port} (is it in use?)")
        time.sleep(0.02)
    yield env, port
    server.should_exit = True
    thread.join(timeout=10)
    rt.close()


def _run(sdk_run, env, user: str, project: str, *ids: str):
    items = json.dumps([{"resource_id": i, "resource_type": "OS::Nova::Server"} for i in ids])
    return sdk_run(CHECK, KS_URL=env["OPENCSBS_TEST_KEYSTONE_URL"], KS_USER=user,
                   KS_PASSWORD=env["OPENCSBS_TEST_KEYSTONE_PASSWORD"], KS_PROJECT=project,
                   PROVIDER=PROVIDER, ITEMS=items).json


def test_sdk_password_mode_through_the_catalog(ks_server, sdk_run):
    env, port = ks_server
    alpha = env["OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA"]
    out = _run(sdk_run, env, "csbs-reader", "csbs-alpha", WEB_1, BROKEN_1, DSS_1, SECRET_1)
    assert out["endpoint"] == f"http://127.0.0.1:{port}/v1/{alpha}"
    verdicts = out["protectable"]
    assert [v["resource_id"] for v in verdicts] == [WEB_1, BROKEN_1, DSS_1, SECRET_1]
    assert verdicts[0] == {"resource_id": WEB_1, "resource_type": "OS::Nova::Server", "result": True}
    assert (verdicts[1]["result"], verdicts[1]["error_code"]) == (False, "CSBS.6006")
    assert verdicts[1]["error_msg"] == f"Server ({BROKEN_1}) status (ERROR) is not allowed to protect."
    assert (verdicts[2]["result"], verdicts[2]["error_code"]) == (False, "CSBS.6033")
    assert (verdicts[3]["result"], verdicts[3]["error_code"]) == (False, "CSBS.6000")


def test_sdk_user_of_another_project_sees_nothing_of_alpha(ks_server, sdk_run):
    env, port = ks_server
    beta = env["OPENCSBS_TEST_KEYSTONE_PROJECT_BETA"]
    out = _run(sdk_run, env, "csbs-other", "csbs-beta", WEB_1)
    assert out["endpoint"] == f"http://127.0.0.1:{port}/v1/{beta}"
    # its catalog leads to its own project, where alpha's server does not exist
    assert out["protectable"][0]["result"] is False
    assert out["protectable"][0]["error_code"] == "CSBS.6000"
