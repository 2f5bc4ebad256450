"""Cloud calls per check_protectable batch against the real clouds: OpenStack (scripts/services/openstack.sh) and
libvirt (scripts/services/libvirt.sh), for batches of N = 1, 100 and 1000 servers.

Setup: 1000 servers in project csbs-bench (created in groups with min_count/max_count, removed at the end unless
--keep; the batches do not wait for them to finish building: Nova lists them from the start and the calls
do not depend on their state), 5 of them booted from volumes; and 1000 defined libvirt domains
sharing one disk image (undefined at the end). Each batch goes through opencsbs's HTTP API in-process (TestClient); the driver's call counter gives the
cloud calls of that batch (after one warm-up batch: token, API version discovery, libvirt XML cache).

After removing its 1000 servers (most deleted while still building) this test Nova answers 500
(OrphanedObjectError) to listings of deleted servers, which the driver's deleted-server lookup makes: restart the
test stack (scripts/services/openstack.sh stop; ... start) before running the driver tests again.

Prints one line per (cloud, mode, N): calls, milliseconds, and the ratio of calls to the N=1 batch, which must be
1.00 (exit status 1 otherwise).

    .venv/bin/python benchmarks/check_protectable_clouds.py            # both clouds (each skipped if not started)
    .venv/bin/python benchmarks/check_protectable_clouds.py --keep     # keep the OpenStack servers for next time
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from fastapi.testclient import TestClient  # noqa: E402

from opencsbs.config import Settings  # noqa: E402

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
SIZES = (1, 100, 1000)
BENCH = "csbs-bench"


def _serve(settings: Settings):
    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    rt = build_runtime(settings)
    return rt, TestClient(create_app(rt), raise_server_exceptions=False)


def _local_token(rt, project: str) -> str:
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction

    with transaction(rt.sessions) as session:
        return create_token(session, project, "member")


def _measure(label: str, rt, client, project: str, headers: dict, ids: list[str], rtype: str) -> bool:
    def batch(n):
        body = {"check_protectable": [{"resource_id": i, "resource_type": rtype} for i in ids[:n]]}
        before, t = rt.driver.calls, time.perf_counter()
        r = client.post(f"/v1/{project}/providers/{PROVIDER}/resources/action", json=body, headers=headers)
        elapsed = (time.perf_counter() - t) * 1000
        if r.status_code != 200:
            raise SystemExit(f"{label}: HTTP {r.status_code} {r.text}")
        ok = sum(1 for v in r.json()["protectable"] if v["result"])
        return rt.driver.calls - before, elapsed, ok

    calls, ms, _ok = batch(len(ids))
    print(f"{label:<34} warm-up N={len(ids)}: calls={calls} time={ms:.1f} ms (token, version discovery, XML cache)")
    base = None
    constant = True
    for n in SIZES:
        calls, ms, ok = batch(n)
        base = base or calls
        ratio = calls / base if base else float("nan")
        constant &= calls == base
        print(f"{label:<34} N={n:<5} calls={calls:<3} ratio_vs_N1={ratio:.2f} time={ms:8.1f} ms  protectable={ok}")
    return constant


# --- OpenStack ----------------------------------------------------------------------------------------------------

def openstack_setup(world, count: int) -> list[str]:
    """``count`` servers named csbs-bench-* in the member's project (reused when present); 5 boot from volumes."""
    compute = world.demo.compute
    have = [s for s in compute.servers(details=False, name=f"^{BENCH}-", limit=1000)]
    with_volumes = [s for s in have if s.name.startswith(f"{BENCH}-bfv")]
    for i in range(len(with_volumes), 5):
        boot = world.volume(f"bench-boot-{i}", bootable=True)
        data = world.volume(f"bench-data-{i}")
        bdm = [{"boot_index": 0, "uuid": boot.id, "source_type": "volume", "destination_type": "volume"},
               {"boot_index": -1, "uuid": data.id, "source_type": "volume", "destination_type": "volume"}]
        s = compute.create_server(name=f"{BENCH}-bfv-{i}", flavor_id=world.flavor.id, networks="none",
                                  block_device_mapping=bdm)
        have.append(s)
    missing = count - len(have)
    t = time.perf_counter()
    while missing > 0:
        group = min(100, missing)
        compute.create_server(name=f"{BENCH}-img", flavor_id=world.flavor.id, networks="none",
                              image_id=world_image(), min_count=group, max_count=group)
        missing -= group
    # the servers need to exist, not to be built: Nova lists them (BUILD, ACTIVE or ERROR) from the moment the
    # create call returns, and a batch's calls do not depend on their state
    servers = list(compute.servers(details=True, name=f"^{BENCH}-"))
    states: dict[str, int] = {}
    for s in servers:
        states[s.status] = states.get(s.status, 0) + 1
    print(f"openstack setup: {len(servers)} servers {states} in project csbs-bench, "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    return [s.id for s in servers][:count]


def world_image() -> str:
    from tests.openstack_world import STUB_IMAGE_ID

    return STUB_IMAGE_ID


def openstack_cleanup(world) -> None:
    compute = world.admin.compute
    for s in list(compute.servers(details=False, all_projects=True, name=f"^{BENCH}-", limit=1000)):
        compute.delete_server(s, force=True)
    for v in world.admin.block_storage.volumes(all_projects=True, name=None):
        if (v.name or "").startswith("csbs-t-bench"):
            world.volumes.append(v.id)
    world.cleanup()


def run_openstack(args) -> bool:
    from tests import openstack_world as ow

    if not ow.available():
        print("openstack: not started (scripts/services/openstack.sh start); skipped")
        return True
    world = ow.World(tag="bench", member_cloud="opencsbs-bench")
    ids = openstack_setup(world, max(SIZES))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("service-user", "caller-token"):
            s = Settings(data_dir=Path(tmp) / mode, workers=0, scheduler=False)
            s.cloud.driver = "openstack"
            s.cloud.openstack_cloud = "opencsbs-service"
            s.cloud.openstack_clouds_yaml = Path(ow.CLOUDS_YAML)
            s.cloud.openstack_timeout = 300  # a 1000-server page of a busy test Nova can take tens of seconds
            if mode == "caller-token":
                s.auth.mode = "keystone"
                s.auth.keystone_url = ow.AUTH_URL
                s.auth.service_username, s.auth.service_password = "opencsbs", "s3cret"
                s.auth.service_project_name = "service"
            rt, client = _serve(s)
            try:
                with client:
                    token = world.demo.session.get_token() if mode == "caller-token" else _local_token(
                        rt, world.project_id)
                    ok &= _measure(f"openstack ({mode})", rt, client, world.project_id,
                                   {"X-Auth-Token": token}, ids, "OS::Nova::Server")
            finally:
                rt.close()
    if not args.keep:
        openstack_cleanup(world)
        print("openstack: servers removed; restart the test stack before the driver tests (see the docstring)")
    return ok


# --- libvirt ------------------------------------------------------------------------------------------------------

def run_libvirt(args) -> bool:
    uri = os.environ.get("OPENCSBS_TEST_LIBVIRT_URI")
    disk_dir = Path(os.environ.get("OPENCSBS_TEST_LIBVIRT_DIR", "/tmp"))
    try:
        import libvirt
    except ImportError:
        uri = None
    if not uri:
        print("libvirt: not started (scripts/services/libvirt.sh start); skipped")
        return True
    import subprocess

    conn = libvirt.open(uri)
    disk = disk_dir / f"{BENCH}-shared.qcow2"
    if not disk.exists():
        disk_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    have = {d.name(): d for d in conn.listAllDomains() if d.name().startswith(f"{BENCH}-")}
    t = time.perf_counter()
    for i in range(max(SIZES)):
        name = f"{BENCH}-{i:04d}"
        if name in have:
            continue
        have[name] = conn.defineXML(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>"
        )
    print(f"libvirt setup: {len(have)} defined domains, {time.perf_counter() - t:.0f} s", flush=True)
    ids = [d.UUIDString() for _, d in sorted(have.items())][: max(SIZES)]
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(data_dir=Path(tmp), workers=0, scheduler=False)
        s.cloud.driver = "libvirt"
        s.cloud.libvirt_uri = uri
        s.cloud.libvirt_project_id = "bench"
        rt, client = _serve(s)
        try:
            with client:
                ok = _measure("libvirt", rt, client, "bench", {"X-Auth-Token": _local_token(rt, "bench")}, ids,
                              "OS::Nova::Server")
        finally:
            rt.close()
    for dom in have.values():  # 10 s to make again: never left on the host
        dom.undefine()
    disk.unlink(missing_ok=True)
    conn.close()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the OpenStack servers for the next run (their builds keep the test compute host "
                             "busy for a long while: the driver tests then wait behind them)")
    parser.add_argument("--only", choices=("openstack", "libvirt"))
    args = parser.parse_args()
    ok = True
    if args.only in (None, "libvirt"):
        ok &= run_libvirt(args)
    if args.only in (None, "openstack"):
        ok &= run_openstack(args)
    print("constant calls per batch: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
