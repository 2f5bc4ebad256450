"""The libvirt driver against a real libvirtd + QEMU (TCG domains), through opencsbs's HTTP API.

Needs ``scripts/services/libvirt.sh start`` (env ``OPENCSBS_TEST_LIBVIRT_URI``, ``OPENCSBS_TEST_LIBVIRT_DIR``).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import require_component
from libvirt_helpers import DISK_DIR, URI, libvirt_available

pytestmark = pytest.mark.libvirt

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
SERVER = "OS::Nova::Server"
NS = "https://opencsbs.org/xmlns/libvirt/1"


def _disk(path: Path, fmt: str, size: str = "64M") -> Path:
    if not path.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    return path


def _domain_xml(name: str, disks: list[tuple[Path, str, str, bool]], metadata: str = "") -> str:
    """``disks``: (path, format, target, shareable)."""
    devs = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/><source file='{path}'/>"
        f"<target dev='{target}' bus='virtio'/>{'<shareable/>' if shared else ''}</disk>"
        for path, fmt, target, shared in disks
    )
    meta = f"<metadata>{metadata}</metadata>" if metadata else ""
    return (
        f"<domain type='qemu'><name>{name}</name>{meta}<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{devs}<memballoon model='none'/>"
        "</devices></domain>"
    )


@pytest.fixture(scope="module")
def lv():
    ok, why = libvirt_available()
    require_component(ok, why)
    import libvirt

    conn = libvirt.open(URI)
    DISK_DIR.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    made = []

    def define(kind: str, disks, metadata: str = "", start: bool = False):
        name = f"opencsbs-test-{tag}-{kind}"
        dom = conn.defineXML(_domain_xml(name, disks, metadata))
        made.append(dom)
        if start:
            dom.create()
        return dom

    def qcow(name):
        return _disk(DISK_DIR / f"{tag}-{name}.qcow2", "qcow2")

    def raw(name):
        return _disk(DISK_DIR / f"{tag}-{name}.raw", "raw")

    doms = {
        "running": define("running", [(qcow("r0"), "qcow2", "vda", False), (qcow("r1"), "qcow2", "vdb", False)],
                          start=True),
        "shutoff": define("shutoff", [(qcow("s0"), "qcow2", "vda", False)]),
        "paused": define("paused", [(qcow("p0"), "qcow2", "vda", False)], start=True),
        "nodisk": define("nodisk", [], start=True),
        "shared": define("shared", [(qcow("sh0"), "qcow2", "vda", False), (raw("sh1"), "raw", "vdb", True)],
                         start=True),
        "other": define("other", [(qcow("o0"), "qcow2", "vda", False)],
                        metadata=f"<opencsbs:server xmlns:opencsbs='{NS}' project_id='someone-else'/>"),
        "noaz": define("noaz", [(qcow("z0"), "qcow2", "vda", False)],
                       metadata=f"<opencsbs:server xmlns:opencsbs='{NS}' availability_zone='az-nobackup'/>"),
        "late": define("late", [(qcow("l0"), "qcow2", "vda", False)]),
    }
    doms["paused"].suspend()
    ids = {k: d.UUIDString() for k, d in doms.items()}
    yield conn, ids, doms, tag
    for dom in made:
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
    for f in DISK_DIR.glob(f"{tag}-*"):
        f.unlink()
    conn.close()


@pytest.fixture
def settings(settings):
    settings.cloud.driver = "libvirt"
    settings.cloud.libvirt_uri = URI or "qemu:///system"
    settings.cloud.libvirt_az = "kvm-az1"
    settings.cloud.libvirt_project_id = "demo"
    return settings


def _check(client, headers, ids, rtype=SERVER):
    r = client.post(
        f"/v1/demo/providers/{PROVIDER}/resources/action",
        json={"check_protectable": [{"resource_id": i, "resource_type": rtype} for i in ids]},
        headers=headers,
    )
    return r


def _verdicts(client, headers, ids):
    r = _check(client, headers, ids)
    assert r.status_code == 200, r.text
    return {v["resource_id"]: v for v in r.json()["protectable"]}


def test_each_domain_state_gets_its_verdict(lv, client, make_token):
    conn, ids, _doms, _tag = lv
    headers = {"X-Auth-Token": make_token("demo", "member")}
    v = _verdicts(client, headers, list(ids.values()) + ["00000000-0000-0000-0000-000000000000"])
    assert v[ids["running"]] == {"resource_id": ids["running"], "resource_type": SERVER, "result": True}
    assert v[ids["shutoff"]]["result"] is True
    assert v[ids["paused"]]["result"] is False
    assert v[ids["paused"]]["error_code"] == "CSBS.6006"
    assert "status (PAUSED)" in v[ids["paused"]]["error_msg"]
    assert v[ids["nodisk"]]["error_code"] == "CSBS.6007"
    shared_disk = str(DISK_DIR / f"{lv[3]}-sh1.raw")
    assert v[ids["shared"]]["error_code"] == "CSBS.6010"
    assert v[ids["shared"]]["error_msg"] == (
        f"Volume ({shared_disk}) attached to server ({ids['shared']}) is shareable volume."
    )
    # another project's domain is "not found", never "exists elsewhere"
    assert v[ids["other"]]["error_code"] == "CSBS.6000"
    assert v[ids["noaz"]]["error_code"] == "CSBS.6027"
    assert v["00000000-0000-0000-0000-000000000000"]["error_code"] == "CSBS.6000"


def test_state_changes_and_device_changes_are_seen(lv, client, make_token, runtime):
    conn, ids, doms, tag = lv
    import libvirt

    headers = {"X-Auth-Token": make_token("demo", "member")}
    late = doms["late"]
    assert _verdicts(client, headers, [ids["late"]])[ids["late"]]["result"] is True
    # a shareable disk added to the (shut off) domain's definition: the next answer refuses it
    disk = _disk(DISK_DIR / f"{tag}-l1.raw", "raw")
    late.attachDeviceFlags(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>"
        "<target dev='vdc' bus='virtio'/><shareable/></disk>",
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    assert _verdicts(client, headers, [ids["late"]])[ids["late"]]["error_code"] == "CSBS.6010"
    late.detachDeviceFlags(
        f"<disk type='file' device='disk'><source file='{disk}'/><target dev='vdc' bus='virtio'/></disk>",
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )
    late.create()
    late.suspend()
    v = _verdicts(client, headers, [ids["late"]])[ids["late"]]
    assert (v["error_code"], "PAUSED" in v["error_msg"]) == ("CSBS.6006", True)
    late.resume()
    assert _verdicts(client, headers, [ids["late"]])[ids["late"]]["result"] is True
    # undefined: gone from the host, so "not found"
    late.destroy()
    late.undefine()
    assert _verdicts(client, headers, [ids["late"]])[ids["late"]]["error_code"] == "CSBS.6000"


def test_a_batch_costs_one_libvirt_call_once_warm(lv, client, make_token, runtime):
    _conn, ids, _doms, _tag = lv
    headers = {"X-Auth-Token": make_token("demo", "member")}
    batch = [i for k, i in ids.items() if k != "late"]
    _verdicts(client, headers, batch)  # fills the XML cache
    before = runtime.driver.calls
    _verdicts(client, headers, batch)
    assert runtime.driver.calls - before == 1
    before = runtime.driver.calls
    _verdicts(client, headers, batch[:1])
    assert runtime.driver.calls - before == 1


def test_upper_case_uuid_is_the_same_domain(lv, client, make_token):
    _conn, ids, _doms, _tag = lv
    headers = {"X-Auth-Token": make_token("demo", "member")}
    upper = ids["running"].upper()
    assert _verdicts(client, headers, [upper])[upper]["result"] is True


def test_unreachable_libvirtd_answers_503(lv, settings, tmp_path):
    from fastapi.testclient import TestClient

    from opencsbs.api.app import create_app
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction
    from opencsbs.bootstrap import build_runtime

    settings.cloud.libvirt_uri = f"qemu:///system?socket={tmp_path}/no-such.sock"
    rt = build_runtime(settings, migrate=False)
    try:
        with transaction(rt.sessions) as session:
            token = create_token(session, "demo", "member")
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            r = _check(c, {"X-Auth-Token": token}, [lv[1]["running"]])
        assert r.status_code == 503
        body = r.json()
        assert body["error_code"] == "CSBS.9999"
        assert "libvirt" in body["error_msg"]
    finally:
        rt.close()


def test_the_console_lists_the_projects_domains(lv, client, make_token, runtime):
    """``GET /opencsbs/v1/{project_id}/servers`` (docs/console.md) through the libvirt driver: the domains of
    the project (the host may hold others of the same project), never another project's; two libvirt calls once
    the domains' XML is cached."""
    conn, ids, _doms, _tag = lv
    headers = {"X-Auth-Token": make_token("demo", "member")}
    r = client.get("/opencsbs/v1/demo/servers", headers=headers)
    assert r.status_code == 200, r.text
    listed = {s["id"]: s for s in r.json()["servers"]}
    # the fixture's domains still on the host (an earlier test undefines "late")
    defined = {d.UUIDString() for d in conn.listAllDomains(0)}
    expected = {ids[k] for k in ids if k != "other"} & defined
    assert {ids["running"], ids["shutoff"], ids["noaz"]} <= expected
    assert expected <= listed.keys() and ids["other"] not in listed
    assert listed[ids["running"]]["status"] == "ACTIVE" and listed[ids["shutoff"]]["status"] == "SHUTOFF"
    assert [v["device"] for v in listed[ids["running"]]["volumes"]] == ["/dev/vda", "/dev/vdb"]
    before = runtime.driver.calls
    client.get("/opencsbs/v1/demo/servers", headers=headers)
    assert runtime.driver.calls - before == 2
    other = {"X-Auth-Token": make_token("someone-else", "member")}
    assert list(map(lambda s: s["id"], client.get("/opencsbs/v1/someone-else/servers", headers=other)
                    .json()["servers"])) == [ids["other"]]
