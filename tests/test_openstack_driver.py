"""The OpenStack driver against a real Nova + Cinder (+ Ironic) started by scripts/services/openstack.sh, through
opencsbs's HTTP API: every check_protectable rule shown on a real server, in service-user mode and with the
caller's own Keystone token passed through."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from opencsbs.db.base import transaction

import openstack_world as ow  # tests/ helpers
from conftest import require_component

pytestmark = pytest.mark.openstack

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
SERVER = "OS::Nova::Server"
BMS = "OS::Ironic::BareMetalServer"


@pytest.fixture(scope="module")
def world():
    require_component(ow.available(), "OpenStack not started (scripts/services/openstack.sh start)")
    w = ow.World()
    try:
        s = {}
        s["active"] = w.boot_from_volume("active", data=[w.volume("active-data")], wait=False)
        s["shutoff"] = w.boot_from_volume("shutoff", wait=False)
        s["error"] = w.boot_from_volume("error", wait=False)
        s["novol"] = w.from_image("novol", wait=False)
        s["multi"] = w.boot_from_volume("multi", data=[w.volume("multi-shared", volume_type="multiattach")],
                                        wait=False)
        s["dss"] = w.boot_from_volume("dss", data=[w.volume("dss-data", volume_type="dss")], wait=False)
        s["noaz"] = w.boot_from_volume("noaz", az="az-nobackup", wait=False)
        s["soft"] = w.from_image("soft", wait=False)
        s["deleted"] = w.from_image("deleted", wait=False)
        s["paused"] = w.from_image("paused", wait=False)
        s["foreign"] = w.from_image("foreign", conn=w.admin, wait=False)
        s = {k: w.wait_active(v, w.admin) for k, v in s.items()}
        compute = w.admin.compute
        compute.stop_server(s["shutoff"])
        compute.reset_server_state(s["error"], "error")
        compute.pause_server(s["paused"])
        compute.delete_server(s["soft"])
        compute.delete_server(s["deleted"])
        w.wait_status(s["shutoff"].id, "SHUTOFF")
        w.wait_status(s["paused"].id, "PAUSED")
        w.wait_status(s["soft"].id, "SOFT_DELETED")
        w.wait_status(s["deleted"].id, "SOFT_DELETED")
        compute.delete_server(s["deleted"], force=True)
        compute.wait_for_delete(s["deleted"], interval=0.3, wait=60)
        w.ids = {k: v.id for k, v in s.items()}
        w.shared_volume = next(v for v in w.demo.block_storage.volumes() if v.name == w.name("multi-shared")).id
        w.dss_volume = next(v for v in w.demo.block_storage.volumes() if v.name == w.name("dss-data")).id
        yield w
    finally:
        w.cleanup()


def _configure_cloud(settings, cloud="opencsbs-service", clouds_yaml=None):
    settings.cloud.driver = "openstack"
    settings.cloud.openstack_cloud = cloud
    settings.cloud.openstack_clouds_yaml = Path(clouds_yaml or ow.CLOUDS_YAML or "/nonexistent")
    settings.cloud.openstack_volume_service_types = {"dss": "DSS", "ssd": "EVS"}
    settings.cloud.openstack_timeout = 20
    return settings


@pytest.fixture
def settings(settings):
    return _configure_cloud(settings)


def _check(client, project, headers, items):
    return client.post(
        f"/v1/{project}/providers/{PROVIDER}/resources/action",
        json={"check_protectable": [{"resource_id": i, "resource_type": t} for i, t in items]},
        headers=headers,
    )


def _verdicts(client, project, headers, ids, rtype=SERVER):
    r = _check(client, project, headers, [(i, rtype) for i in ids])
    assert r.status_code == 200, r.text
    return {v["resource_id"]: v for v in r.json()["protectable"]}


def _expect_all_rules(v, ids, w):
    assert v[ids["active"]] == {"resource_id": ids["active"], "resource_type": SERVER, "result": True}
    assert v[ids["shutoff"]]["result"] is True and "error_code" not in v[ids["shutoff"]]
    assert (v[ids["error"]]["error_code"], v[ids["error"]]["error_msg"]) == (
        "CSBS.6006", f"Server ({ids['error']}) status (ERROR) is not allowed to protect.")
    assert "status (PAUSED)" in v[ids["paused"]]["error_msg"]
    assert v[ids["novol"]]["error_code"] == "CSBS.6007"
    assert (v[ids["multi"]]["error_code"], v[ids["multi"]]["error_msg"]) == (
        "CSBS.6010", f"Volume ({w.shared_volume}) attached to server ({ids['multi']}) is shareable volume.")
    assert (v[ids["dss"]]["error_code"], v[ids["dss"]]["error_msg"]) == (
        "CSBS.6033", f"Service type of volume {w.dss_volume}(belong to server {ids['dss']}) is dss.")
    assert v[ids["noaz"]]["error_code"] == "CSBS.6027"
    assert (v[ids["soft"]]["error_code"], v[ids["soft"]]["error_msg"]) == ("CSBS.6001", "The server has stopped.")
    assert (v[ids["deleted"]]["error_code"], v[ids["deleted"]]["error_msg"]) == ("CSBS.6001", "The server has stopped.")
    # a server of another project: "not found", never "exists elsewhere"
    assert (v[ids["foreign"]]["error_code"], v[ids["foreign"]]["error_msg"]) == ("CSBS.6000", "server do not exist")
    for k in v:
        assert v[k]["result"] is (k in (ids["active"], ids["shutoff"]))


def test_every_rule_on_real_servers_with_the_service_user(world, client, make_token, runtime):
    ids = world.ids
    headers = {"X-Auth-Token": make_token(world.project_id, "member")}
    unknown = str(uuid.uuid4())
    v = _verdicts(client, world.project_id, headers, [*ids.values(), unknown])
    _expect_all_rules(v, ids, world)
    assert v[unknown]["error_code"] == "CSBS.6000"
    # a volume is not a protectable server type
    r = _check(client, world.project_id, headers, [(ids["active"], "OS::Cinder::Volume")])
    assert r.json()["protectable"][0]["error_code"] == "CSBS.6003"
    # no Ironic node carries this instance: as a bare-metal server it is not found
    r = _check(client, world.project_id, headers, [(ids["active"], BMS)])
    assert r.json()["protectable"][0]["error_code"] == "CSBS.6000"


def test_opencsbs_own_state_rules_on_a_real_server(world, client, make_token, runtime):
    """CSBS.6005 (a backup running) and CSBS.6004 (bound to a policy) come from opencsbs's own database."""
    from opencsbs.db.models import ResourceLock

    ids = world.ids
    headers = {"X-Auth-Token": make_token(world.project_id, "member")}
    with transaction(runtime.sessions) as session:
        session.add(ResourceLock(resource_id=ids["active"], project_id=world.project_id, operation="backup"))
    assert _verdicts(client, world.project_id, headers, [ids["active"]])[ids["active"]]["error_code"] == "CSBS.6005"
    with transaction(runtime.sessions) as session:
        session.delete(session.get(ResourceLock, ids["active"]))
    r = client.post(
        f"/v1/{world.project_id}/policies",
        json={"policy": {"name": "daily", "provider_id": PROVIDER, "parameters": {"common": {}},
                         "scheduled_operations": [{"name": "op", "enabled": True, "operation_type": "backup",
                                                   "operation_definition": {"max_backups": 3},
                                                   "trigger": {"properties": {"pattern":
                                                       "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;"
                                                       "BYHOUR=2;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"}}}],
                         "resources": [{"id": ids["shutoff"], "type": SERVER, "name": "shutoff"}]}},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    v = _verdicts(client, world.project_id, headers, [ids["shutoff"]])[ids["shutoff"]]
    assert (v["result"], v["error_code"]) == (True, "CSBS.6004")


def test_a_batch_costs_a_constant_number_of_calls(world, client, make_token, runtime):
    """Nova + Cinder (+ Ironic) list calls, one page each here; one more Nova call when some ids are not in Nova's
    default listing (the deleted-servers lookup). Never one call per server."""
    headers = {"X-Auth-Token": make_token(world.project_id, "member")}
    ids = world.ids
    # in Nova's default listing: everything but the deleted, soft-deleted and foreign servers
    present = [i for k, i in ids.items() if k not in ("deleted", "soft", "foreign")]
    _verdicts(client, world.project_id, headers, present)  # connection, token and version discovery
    base = 2 + (1 if ow.IRONIC else 0)
    costs = []
    for batch in ([ids["active"]], present, [*present, ids["deleted"]], [*ids.values(), *map(str, range(500))]):
        before = runtime.driver.calls
        _verdicts(client, world.project_id, headers, batch)
        costs.append(runtime.driver.calls - before)
    assert costs == [base, base, base + 1, base + 1]


def test_a_task_in_progress_is_refused_then_allowed(world, client, make_token):
    """A stop sent to a compute host that is not answering leaves the server with task powering-off."""
    require_component(bool(ow.STACK_DIR), "stack dir not exported by openstack.sh")
    ids = world.ids
    headers = {"X-Auth-Token": make_token(world.project_id, "member")}
    pid = int(Path(ow.STACK_DIR, "run", "nova-compute2.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        world.admin.compute.stop_server(ids["noaz"])
        v = _verdicts(client, world.project_id, headers, [ids["noaz"]])[ids["noaz"]]
        assert (v["error_code"], v["error_msg"]) == (
            "CSBS.6006", f"Server ({ids['noaz']}) status (ACTIVE(powering-off)) is not allowed to protect.")
    finally:
        os.kill(pid, signal.SIGCONT)
    world.wait_status(ids["noaz"], "SHUTOFF")
    assert _verdicts(client, world.project_id, headers, [ids["noaz"]])[ids["noaz"]]["error_code"] == "CSBS.6027"


# --- the caller's own token ------------------------------------------------------------------------------------

@pytest.fixture
def keystone_client(settings):
    """opencsbs in Keystone mode against the stack's Keystone, passing the caller's token to the cloud."""
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    require_component(ow.available(), "OpenStack not started (scripts/services/openstack.sh start)")
    settings.auth.mode = "keystone"
    settings.auth.keystone_url = ow.AUTH_URL
    settings.auth.service_username = "opencsbs"
    settings.auth.service_password = "s3cret"
    settings.auth.service_project_name = "service"
    rt = build_runtime(settings, migrate=False)
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c, rt
    rt.close()


def test_every_rule_with_the_callers_token(world, keystone_client):
    client, rt = keystone_client
    assert rt.driver.pass_token
    token = world.demo.session.get_token()
    ids = world.ids
    v = _verdicts(client, world.project_id, {"X-Auth-Token": token}, list(ids.values()))
    _expect_all_rules(v, ids, world)


def test_the_cloud_never_shows_a_member_another_projects_server(world, keystone_client):
    """The admin's token scoped to its own project sees that project's server (found: no volume) and not the
    member project's servers, though an admin."""
    client, _rt = keystone_client
    admin_token = world.admin.session.get_token()
    ids = world.ids
    v = _verdicts(client, world.admin_project_id, {"X-Auth-Token": admin_token}, [ids["foreign"], ids["active"]])
    assert v[ids["foreign"]]["error_code"] == "CSBS.6007"
    assert v[ids["active"]]["error_code"] == "CSBS.6000"


# --- failures of the cloud: 503, never a verdict -------------------------------------------------------------

class _Stub(BaseHTTPRequestHandler):
    mode = "500"

    def do_GET(self):  # noqa: N802
        if self.mode == "hang":
            time.sleep(5)
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "boom"}')

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def broken_cloud(tmp_path):
    servers = []

    def make(mode: str) -> Path:
        handler = type("H", (_Stub,), {"mode": mode})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        path = tmp_path / f"clouds-{mode}.yaml"
        path.write_text(yaml.safe_dump({"clouds": {"broken": {"auth": {
            "auth_url": f"http://127.0.0.1:{srv.server_address[1]}/v3", "username": "x", "password": "y",
            "project_name": "p", "user_domain_id": "default", "project_domain_id": "default"}}}}))
        return path

    yield make
    for srv in servers:
        srv.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answer_with(settings, cloud, clouds_yaml, timeout=20.0):
    from opencsbs.api.app import create_app
    from opencsbs.auth.local import create_token
    from opencsbs.bootstrap import build_runtime

    _configure_cloud(settings, cloud, clouds_yaml)
    settings.cloud.openstack_timeout = timeout
    rt = build_runtime(settings, migrate=False)
    try:
        with transaction(rt.sessions) as session:
            token = create_token(session, "p1", "member")
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            return _check(c, "p1", {"X-Auth-Token": token}, [(str(uuid.uuid4()), SERVER)])
    finally:
        rt.close()


def test_without_rbd_backends_the_driver_is_an_inventory_only_type(settings):
    """No ``cloud.openstack_rbd_backends``: the driver built is only an ``Inventory`` (it lists and describes
    servers), and asking it for a data path answers CSBS.9998 (HTTP 500, "System not support")."""
    from opencsbs.clouds.base import DataPath, Inventory, data_path
    from opencsbs.clouds.openstack import OpenStackInventory, build_openstack_driver
    from opencsbs.core.errors import CSBSError

    driver = build_openstack_driver(_configure_cloud(settings))
    try:
        assert type(driver) is OpenStackInventory
        assert isinstance(driver, Inventory) and not isinstance(driver, DataPath)
        with pytest.raises(CSBSError) as refused:
            data_path(driver)
        assert (refused.value.error_code, refused.value.status) == ("CSBS.9998", 500)
        assert "openstack" in refused.value.error_msg
    finally:
        driver.close()


def test_service_user_refused_answers_503(settings, tmp_path):
    require_component(ow.available(), "OpenStack not started (scripts/services/openstack.sh start)")
    bad = tmp_path / "clouds.yaml"
    data = yaml.safe_load(Path(ow.CLOUDS_YAML).read_text())
    data["clouds"]["opencsbs-service"]["auth"]["password"] = "wrong"
    bad.write_text(yaml.safe_dump(data))
    r = _answer_with(settings, "opencsbs-service", bad)
    assert r.status_code == 503
    assert r.json() == {"error_code": "CSBS.9999", "error_msg": "asking the cloud (service user refused) failed"}


def test_cloud_answering_5xx_answers_503(settings, broken_cloud):
    r = _answer_with(settings, "broken", broken_cloud("500"))
    assert (r.status_code, r.json()["error_code"]) == (503, "CSBS.9999")


def test_cloud_timing_out_answers_503(settings, broken_cloud):
    t = time.monotonic()
    r = _answer_with(settings, "broken", broken_cloud("hang"), timeout=1.0)
    assert (r.status_code, r.json()["error_code"]) == (503, "CSBS.9999")
    assert time.monotonic() - t < 15


def test_cloud_unreachable_answers_503(settings, tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": {"gone": {"auth": {
        "auth_url": f"http://127.0.0.1:{_free_port()}/v3", "username": "x", "password": "y", "project_name": "p",
        "user_domain_id": "default", "project_domain_id": "default"}}}}))
    r = _answer_with(settings, "gone", path)
    assert r.status_code == 503
    assert r.json() == {"error_code": "CSBS.9999", "error_msg": "asking the cloud (unreachable) failed"}


def test_unknown_cloud_entry_answers_503(settings, tmp_path):
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds: {}\n")
    r = _answer_with(settings, "nope", path)
    assert (r.status_code, r.json()["error_code"]) == (503, "CSBS.9999")
    assert "nope" in r.json()["error_msg"]


# --- bare-metal servers: a real Ironic with fake hardware ---------------------------------------------------------

@pytest.fixture(scope="module")
def bare_metal(world):
    """Two deployed Ironic nodes leased to csbs-demo: one whose instance has a boot and a data volume (volume
    targets), one without volumes."""
    require_component(ow.IRONIC, "Ironic not started by scripts/services/openstack.sh")
    bm = world.admin.baremetal
    nodes = []
    try:
        made = {}
        for what in ("bms", "bms-novol"):
            node = bm.create_node(name=world.name(what), driver="fake-hardware", storage_interface="fake",
                                  lessee=world.project_id)
            nodes.append(node)
            made[what] = node
        boot = world.volume("bms-boot", bootable=True)
        data = world.volume("bms-data")
        for index, vol in ((0, boot), (1, data)):
            bm.create_volume_target(node_id=made["bms"].id, volume_type="iscsi", volume_id=vol.id, boot_index=index)
        instances = {}
        for what, node in made.items():
            bm.set_node_provision_state(node, "manage", wait=True, timeout=120)
            bm.set_node_provision_state(node, "provide", wait=True, timeout=120)
            instances[what] = str(uuid.uuid4())
            bm.update_node(node, instance_id=instances[what],
                           instance_info={"image_source": "http://127.0.0.1:9292/csbs-stub-image",
                                          "display_name": world.name(what)})
            bm.set_node_provision_state(node, "active", wait=True, timeout=120)
            bm.set_node_power_state(node, "power on", wait=True, timeout=60)
        world.bms = {"nodes": made, "instances": instances, "boot": boot.id, "data": data.id}
        yield world
    finally:
        for node in nodes:
            try:
                bm.unset_node_maintenance(node)
                bm.update_node(node, instance_id=None)
                bm.set_node_provision_state(node, "deleted", wait=True, timeout=120)
            except Exception:  # noqa: BLE001 - still delete it
                pass
            try:
                bm.delete_node(node)
            except Exception:  # noqa: BLE001
                pass


def _bms_verdicts(client, world, headers):
    inst = world.bms["instances"]
    return _verdicts(client, world.project_id, headers, [inst["bms"], inst["bms-novol"]], rtype=BMS)


def test_bare_metal_servers_from_ironic(bare_metal, client, make_token, runtime):
    w = bare_metal
    inst = w.bms["instances"]
    headers = {"X-Auth-Token": make_token(w.project_id, "member")}
    v = _bms_verdicts(client, w, headers)
    assert v[inst["bms"]] == {"resource_id": inst["bms"], "resource_type": BMS, "result": True}
    assert v[inst["bms-novol"]]["error_code"] == "CSBS.6007"
    facts = runtime.driver.get_servers(
        __import__("opencsbs.clouds.base", fromlist=["CloudContext"]).CloudContext(project_id=w.project_id),
        [inst["bms"]])[inst["bms"]]
    assert [(v.id, v.bootable) for v in facts.volumes] == [(w.bms["boot"], True), (w.bms["data"], False)]
    # the same instance asked as a virtual server: not found (the type must match)
    r = _check(client, w.project_id, headers, [(inst["bms"], SERVER)])
    assert r.json()["protectable"][0]["error_code"] == "CSBS.6000"
    bm = w.admin.baremetal
    node = w.bms["nodes"]["bms"]
    bm.set_node_power_state(node, "power off", wait=True, timeout=60)
    assert _bms_verdicts(client, w, headers)[inst["bms"]]["result"] is True  # stopped: SHUTOFF is fine
    bm.set_node_maintenance(node, reason="disk replacement")
    try:
        v = _bms_verdicts(client, w, headers)[inst["bms"]]
        assert (v["error_code"], v["error_msg"]) == (
            "CSBS.6006", f"Server ({inst['bms']}) status (ERROR(maintenance)) is not allowed to protect.")
    finally:
        bm.unset_node_maintenance(node)
        bm.set_node_power_state(node, "power on", wait=True, timeout=60)


def test_bare_metal_servers_with_the_callers_token(bare_metal, keystone_client):
    """The member sees the nodes leased to its project (Ironic's own project scoping)."""
    client, _rt = keystone_client
    w = bare_metal
    inst = w.bms["instances"]
    v = _bms_verdicts(client, w, {"X-Auth-Token": w.demo.session.get_token()})
    assert v[inst["bms"]]["result"] is True
    assert v[inst["bms-novol"]]["error_code"] == "CSBS.6007"
    # another project's token sees neither
    v = _verdicts(client, w.admin_project_id, {"X-Auth-Token": w.admin.session.get_token()},
                  [inst["bms"]], rtype=BMS)
    assert v[inst["bms"]]["error_code"] == "CSBS.6000"


def test_the_console_lists_the_projects_servers(world, client, make_token, keystone_client):
    """``GET /opencsbs/v1/{project_id}/servers`` (docs/console.md) through the OpenStack driver: the project's
    Nova servers, with the service user and with the caller's own token; never another project's."""
    ids = world.ids
    live = {ids[k] for k in ("active", "shutoff", "error", "novol", "multi", "dss", "noaz", "paused")}
    for c, headers in ((client, {"X-Auth-Token": make_token(world.project_id, "member")}),
                       (keystone_client[0], {"X-Auth-Token": world.demo.session.get_token()})):
        r = c.get(f"/opencsbs/v1/{world.project_id}/servers", headers=headers)
        assert r.status_code == 200, r.text
        listed = {s["id"]: s for s in r.json()["servers"]}
        assert live <= listed.keys()
        assert ids["foreign"] not in listed and ids["deleted"] not in listed
        assert listed[ids["shutoff"]]["status"] == "SHUTOFF"
        assert len(listed[ids["active"]]["volumes"]) == 2
