"""The real client, huaweicloud-sdk-python 1.0.28 (``openstack.csbs.v1``), asks check_protectable of a running
opencsbs over HTTP in token mode and reads the verdicts (needs ``scripts/services/sdk.sh start``)."""

from __future__ import annotations

import pytest

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
BROKEN_1 = "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003"
DSS_1 = "7ade8b7f-bd5f-40c3-8fa6-8b1a9a7b0008"
SECRET_1 = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"

pytestmark = pytest.mark.sdk

CHECK = """
import json, os, sys
from openstack import connection, exceptions
from openstack.csbs.v1 import resource as csbs_resource

conn = connection.Connection(auth_token=os.environ["TOKEN"], auth_url="http://127.0.0.1:9/v3")
items = json.loads(os.environ["ITEMS"])
query = csbs_resource.ResourceBackupCapability.new(provider_id=os.environ["PROVIDER"], check_protectable=items)
try:
    answer = query.create(conn.session, prepend_key=False)
except exceptions.HttpException as exc:
    print(json.dumps({"status": exc.http_status, "code": exc.code, "details": str(exc)}))
    sys.exit(0)
print(json.dumps({"protectable": answer.protectable}))
"""


def _items(*ids, rtype="OS::Nova::Server"):
    import json

    return json.dumps([{"resource_id": i, "resource_type": rtype} for i in ids])


def test_sdk_reads_every_verdict_in_order(live_server, inventory, make_token, sdk_run):
    token = make_token("demo", "reader")
    out = sdk_run(CHECK, TOKEN=token, PROVIDER=PROVIDER, ITEMS=_items(WEB_1, BROKEN_1, DSS_1, SECRET_1),
                  OS_DATA_PROTECT_ENDPOINT_OVERRIDE=f"{live_server}/v1/demo").json
    verdicts = out["protectable"]
    assert [v["resource_id"] for v in verdicts] == [WEB_1, BROKEN_1, DSS_1, SECRET_1]
    assert verdicts[0] == {"resource_id": WEB_1, "resource_type": "OS::Nova::Server", "result": True}
    assert (verdicts[1]["result"], verdicts[1]["error_code"]) == (False, "CSBS.6006")
    assert verdicts[1]["error_msg"] == f"Server ({BROKEN_1}) status (ERROR) is not allowed to protect."
    assert (verdicts[2]["result"], verdicts[2]["error_code"]) == (False, "CSBS.6033")
    assert (verdicts[3]["result"], verdicts[3]["error_code"]) == (False, "CSBS.6000")


def test_sdk_sees_http_errors(live_server, inventory, make_token, sdk_run):
    endpoint = f"{live_server}/v1/demo"
    bad_token = sdk_run(CHECK, TOKEN="not-a-token", PROVIDER=PROVIDER, ITEMS=_items(WEB_1),
                        OS_DATA_PROTECT_ENDPOINT_OVERRIDE=endpoint).json
    assert bad_token["status"] == 401, bad_token
    foreign = sdk_run(CHECK, TOKEN=make_token("other-project"), PROVIDER=PROVIDER, ITEMS=_items(WEB_1),
                      OS_DATA_PROTECT_ENDPOINT_OVERRIDE=endpoint).json
    assert foreign["status"] == 403
    bad_provider = sdk_run(CHECK, TOKEN=make_token("demo"), PROVIDER="not-csbs", ITEMS=_items(WEB_1),
                           OS_DATA_PROTECT_ENDPOINT_OVERRIDE=endpoint).json
    assert bad_provider["status"] == 400
    # The SDK reads our error body: its exception carries error_code as .code and error_msg in its text.
    assert (bad_token["code"], foreign["code"], bad_provider["code"]) == ("APIGW.0301", "APIGW.0302", "CSBS.9001")
    assert "provider invalid" in bad_provider["details"]
