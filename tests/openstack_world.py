"""Helpers that make real servers and volumes on the test OpenStack (scripts/services/openstack.sh) with openstacksdk.

Used by ``tests/test_openstack_driver.py`` and ``benchmarks/check_protectable_clouds.py``. Everything made here is
named ``csbs-t-<tag>-...`` and removed by :meth:`World.cleanup` (servers force-deleted, then volumes).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", module="openstack")

CLOUDS_YAML = os.environ.get("OPENCSBS_TEST_OS_CLOUDS_YAML")
STACK_DIR = os.environ.get("OPENCSBS_TEST_OS_STACK_DIR")
AUTH_URL = os.environ.get("OPENCSBS_TEST_OS_AUTH_URL", "http://127.0.0.1:5000/v3")
IRONIC = os.environ.get("OPENCSBS_TEST_OS_IRONIC") == "1"
#: the image served by the stack's Glance stand-in (scripts/services/openstack/stubs.py)
STUB_IMAGE_ID = "5a0bd4f1-57ad-4d5a-a2d3-1f0c0b6c0e11"


def available() -> bool:
    return bool(CLOUDS_YAML and Path(CLOUDS_YAML).exists())


def connect(cloud: str):
    import openstack.config
    import openstack.connection

    region = openstack.config.OpenStackConfig(config_files=[CLOUDS_YAML], load_envvars=False).get_one(cloud=cloud)
    return openstack.connection.Connection(config=region)


class World:
    """Servers and volumes of project ``csbs-demo`` (or the project of ``member_cloud``), made with its member user,
    plus admin-side changes."""

    def __init__(self, tag: str | None = None, member_cloud: str = "opencsbs-demo"):
        self.tag = tag or uuid.uuid4().hex[:6]
        self.admin = connect("opencsbs-admin")
        self.demo = connect(member_cloud)
        self.project_id = self.demo.current_project_id
        self.admin_project_id = self.admin.current_project_id
        self.flavor = self.admin.compute.find_flavor("csbs.tiny")
        self.servers: list[str] = []
        self.admin_servers: list[str] = []
        self.volumes: list[str] = []

    def name(self, what: str) -> str:
        return f"csbs-t-{self.tag}-{what}"

    # -- volumes --------------------------------------------------------------------------------------------
    def volume(self, what: str, volume_type: str | None = None, bootable: bool = False, wait: bool = True):
        bs = self.demo.block_storage
        kwargs = {"volume_type": volume_type} if volume_type else {}
        vol = bs.create_volume(size=1, name=self.name(what), **kwargs)
        self.volumes.append(vol.id)
        if wait:
            vol = bs.wait_for_status(vol, "available", failures=["error"], interval=0.3, wait=120)
            if bootable:
                bs.set_volume_bootable_status(vol, True)
        return vol

    # -- servers --------------------------------------------------------------------------------------------
    def _create(self, conn, what: str, az: str | None, **kwargs):
        if az:
            kwargs["availability_zone"] = az
        server = conn.compute.create_server(name=self.name(what), flavor_id=self.flavor.id, networks="none",
                                            **kwargs)
        return server

    def boot_from_volume(self, what: str, data: list = (), az: str | None = None, wait: bool = True):
        """A server booted from a new bootable volume, with ``data`` volumes (sdk Volume objects) attached."""
        boot = self.volume(f"{what}-boot", bootable=True)
        bdm = [{"boot_index": 0, "uuid": boot.id, "source_type": "volume", "destination_type": "volume",
                "delete_on_termination": False}]
        bdm += [{"boot_index": -1, "uuid": v.id, "source_type": "volume", "destination_type": "volume",
                 "delete_on_termination": False} for v in data]
        server = self._create(self.demo, what, az, block_device_mapping=bdm)
        self.servers.append(server.id)
        return self.wait_active(server) if wait else server

    def from_image(self, what: str, az: str | None = None, conn=None, wait: bool = True):
        """A server without volumes (booted from the stand-in image)."""
        conn = conn or self.demo
        server = self._create(conn, what, az, image_id=STUB_IMAGE_ID)
        (self.admin_servers if conn is self.admin else self.servers).append(server.id)
        return self.wait_active(server, conn) if wait else server

    def wait_active(self, server, conn=None):
        conn = conn or self.demo
        return conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], interval=0.3, wait=180)

    def wait_status(self, server_id: str, status: str, wait: float = 120):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s = self.admin.compute.get_server(server_id)
            if s.status == status and not s.task_state:
                return s
            time.sleep(0.3)
        raise TimeoutError(f"server {server_id} not {status}: {s.status}/{s.task_state}")

    def attach(self, server, volume):
        self.demo.compute.create_volume_attachment(server, volume_id=volume.id)
        self.demo.block_storage.wait_for_status(volume, "in-use", failures=["error"], interval=0.3, wait=120)

    # -- cleanup --------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        compute = self.admin.compute
        for sid in self.servers + self.admin_servers:
            try:
                s = compute.get_server(sid)
            except Exception:  # noqa: BLE001 - already gone
                continue
            try:
                compute.delete_server(s, force=True)  # forceDelete: also ends SOFT_DELETED
            except Exception:  # noqa: BLE001
                pass
        for sid in self.servers + self.admin_servers:
            try:
                compute.wait_for_delete(compute.get_server(sid), interval=0.3, wait=120)
            except Exception:  # noqa: BLE001
                pass
        bs = self.admin.block_storage
        for vid in self.volumes:
            try:
                vol = bs.get_volume(vid)
                if vol.status not in ("available", "error"):
                    bs.reset_volume_status(vol, status="available", attach_status="detached", migration_status=None)
                bs.delete_volume(vol, force=True)
            except Exception:  # noqa: BLE001
                pass
