"""The sandbox cloud: inventory load/upsert and validation, multi-attach, sparse volume files, the driver's
batch facts with a constant call count."""

from __future__ import annotations

import hashlib
import io
import resource
import signal

import pytest
import yaml

from opencsbs.clouds.base import CloudContext
from opencsbs.clouds.sandbox.inventory import (
    GIB, InventoryError, delete_resource, hash_volume, list_servers, list_volumes, load_inventory,
    load_inventory_file, set_server, volume_file, write_volume,
)
from opencsbs.db.base import transaction
from opencsbs.clouds.sandbox.models import SandboxAttachment, SandboxServer, SandboxVolume
from opencsbs.service.protectable import check_protectable
from opencsbs.auth.base import Principal

from conftest import EXAMPLE_INVENTORY

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB_1_SYS = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01"


def load(runtime, data):
    with transaction(runtime.sessions) as s:
        return load_inventory(s, data, runtime.settings.volumes_dir)


def count(runtime, model):
    with runtime.sessions() as s:
        return s.query(model).count()


def facts(runtime, project, *ids, all_tenants=False):
    return runtime.driver.get_servers(CloudContext(project, all_tenants=all_tenants), list(ids))


# --- loading ------------------------------------------------------------------------------------------------


def test_example_loads_every_server_and_volume(runtime, inventory):
    with runtime.sessions() as s:
        servers = list_servers(s)
        assert len(servers) == 12
        assert {x.project_id for x in servers} == {"demo", "other-project"}
        assert len(list_servers(s, "demo")) == 11
        spare = [v for v in list_volumes(s, "demo") if v.name == "spare-disk"]
        assert spare and spare[0].status == "available"
    web = facts(runtime, "demo", WEB_1)[WEB_1]
    assert (web.name, web.status, web.availability_zone, web.flavor) == ("web-1", "ACTIVE", "az1",
                                                                          {"vcpus": 2, "ram": 2048})
    assert [(v.device, v.bootable, v.size_gb, v.volume_type, v.service_type, v.status) for v in web.volumes] == [
        ("/dev/vda", True, 1, "SSD", "EVS", "in-use"), ("/dev/vdb", False, 1, "SSD", "EVS", "in-use")]
    assert [v.id for v in web.volumes if v.bootable] == [WEB_1_SYS]


def test_reload_is_an_upsert(runtime, inventory):
    before = (count(runtime, SandboxServer), count(runtime, SandboxVolume), count(runtime, SandboxAttachment))
    with transaction(runtime.sessions) as s:
        load_inventory_file(s, EXAMPLE_INVENTORY, runtime.settings.volumes_dir)
    assert (count(runtime, SandboxServer), count(runtime, SandboxVolume), count(runtime, SandboxAttachment)) == before
    load(runtime, {"projects": {"demo": {"servers": [{"id": WEB_1, "status": "shutoff"}]}}})
    web = facts(runtime, "demo", WEB_1)[WEB_1]
    assert web.status == "SHUTOFF"
    assert len(web.volumes) == 2, "a server entry without 'volumes' keeps its attachments"
    load(runtime, {"projects": {"demo": {"servers": [{"id": WEB_1, "volumes": [{"id": WEB_1_SYS}]}]}}})
    assert [v.id for v in facts(runtime, "demo", WEB_1)[WEB_1].volumes] == [WEB_1_SYS]


def test_ids_are_generated_when_absent(runtime):
    counts = load(runtime, {"projects": {"p": {"servers": [{"name": "a", "volumes": [{"size_gb": 1}]}]}}})
    assert counts == {"servers": 1, "volumes": 1}
    with runtime.sessions() as s:
        (srv,) = list_servers(s, "p")
    assert len(srv.id) == 36 and len(srv.attachments[0].volume_id) == 36


def test_multi_attach_volume_shared_by_two_servers(runtime):
    shared = {"id": "vol-shared", "size_gb": 1, "shareable": True}
    load(runtime, {"projects": {"p": {"servers": [
        {"id": "srv-a", "volumes": [{"id": "sys-a", "size_gb": 1, "bootable": True}, shared]},
        {"id": "srv-b", "volumes": [{"id": "sys-b", "size_gb": 1, "bootable": True}, {"id": "vol-shared"}]},
    ]}}})
    assert count(runtime, SandboxVolume) == 3
    got = facts(runtime, "p", "srv-a", "srv-b")
    assert [v.id for v in got["srv-a"].volumes] == ["sys-a", "vol-shared"]
    assert [v.id for v in got["srv-b"].volumes] == ["sys-b", "vol-shared"]
    assert got["srv-b"].volumes[1].shareable is True
    verdicts = check_protectable(runtime, Principal("p", "u"), "p", [("srv-a", "OS::Nova::Server"),
                                                                     ("srv-b", "OS::Nova::Server")])
    assert [v.error_code for v in verdicts] == ["CSBS.6010", "CSBS.6010"]
    with transaction(runtime.sessions) as s:
        assert delete_resource(s, "srv-a", runtime.settings.volumes_dir) == "server"
    with runtime.sessions() as s:
        assert s.get(SandboxVolume, "vol-shared").status == "in-use"
        assert s.get(SandboxVolume, "sys-a").status == "available"
    with transaction(runtime.sessions) as s:
        delete_resource(s, "srv-b", runtime.settings.volumes_dir)
    with runtime.sessions() as s:
        assert s.get(SandboxVolume, "vol-shared").status == "available"


BAD_INVENTORIES = {
    "not-a-mapping": ([1, 2], "mapping"),
    "no-projects": ({"servers": []}, "projects"),
    "project-not-mapping": ({"projects": {"p": [1]}}, "must be a mapping"),
    "server-not-mapping": ({"projects": {"p": {"servers": ["x"]}}}, "must be a mapping"),
    "volume-not-mapping": ({"projects": {"p": {"volumes": ["x"]}}}, "must be a mapping"),
    "unknown-server-key": ({"projects": {"p": {"servers": [{"id": "s", "colour": "red"}]}}}, "colour"),
    "unknown-volume-key": ({"projects": {"p": {"volumes": [{"id": "v", "size_gb": 1, "iops": 3}]}}}, "iops"),
    "bad-type": ({"projects": {"p": {"servers": [{"id": "s", "type": "OS::Cinder::Volume"}]}}}, "type"),
    "size-missing": ({"projects": {"p": {"volumes": [{"id": "v"}]}}}, "size_gb"),
    "size-zero": ({"projects": {"p": {"volumes": [{"id": "v", "size_gb": 0}]}}}, "size_gb"),
    "size-text": ({"projects": {"p": {"volumes": [{"id": "v", "size_gb": "1"}]}}}, "size_gb"),
    "size-bool": ({"projects": {"p": {"volumes": [{"id": "v", "size_gb": True}]}}}, "size_gb"),
    "volumes-not-list": ({"projects": {"p": {"servers": [{"id": "s", "volumes": {"id": "v"}}]}}}, "list"),
    "server-of-other-project": ({"projects": {"other-project": {"servers": [{"id": WEB_1}]}}}, "another project"),
    "volume-of-other-project": ({"projects": {"x": {"volumes": [{"id": WEB_1_SYS, "size_gb": 1}]}}}, "another project"),
    # longer than their columns: PostgreSQL refuses them (a DataError traceback), SQLite would store them
    "server-id-too-long": ({"projects": {"p": {"servers": [{"id": "s" * 37}]}}}, "at most 36"),
    "project-id-too-long": ({"projects": {"p" * 65: {"servers": [{"id": "s"}]}}}, "at most 64"),
    "server-name-too-long": ({"projects": {"p": {"servers": [{"id": "s", "name": "n" * 256}]}}}, "at most 255"),
    "az-too-long": ({"projects": {"p": {"servers": [{"id": "s", "availability_zone": "a" * 65}]}}}, "at most 64"),
    "volume-type-too-long": ({"projects": {"p": {"volumes": [{"id": "v", "size_gb": 1, "volume_type": "t" * 65}]}}},
                             "at most 64"),
    # a typo at project level or at the top was silently ignored ("loaded 0 servers")
    "unknown-project-key": ({"projects": {"p": {"server": [{"id": "s"}]}}},
                            r"project p: unknown key\(s\) \['server'\] \(did you mean 'servers'\?\)"),
    # one id twice: the second entry silently overwrote the first
    "server-listed-twice": ({"projects": {"p": {"servers": [{"id": "s2", "name": "a"}, {"id": "s2", "name": "b"}]}}},
                            "server s2: listed twice in project p"),
    "server-in-two-projects": ({"projects": {"p": {"servers": [{"id": "s3"}]}, "q": {"servers": [{"id": "s3"}]}}},
                               r"server s3: listed twice \(projects p and q\)"),
    # past the size_gb column (a 32-bit integer on PostgreSQL) and any file system
    "volume-too-large": ({"projects": {"p": {"volumes": [{"id": "huge-v", "size_gb": 2**34}]}}}, "at most"),
}


@pytest.mark.parametrize("name", list(BAD_INVENTORIES))
def test_invalid_inventory_is_refused_and_nothing_is_written(runtime, inventory, name):
    data, words = BAD_INVENTORIES[name]
    before = (count(runtime, SandboxServer), count(runtime, SandboxVolume), count(runtime, SandboxAttachment))
    bad = {"projects": {"fresh": {"servers": [{"id": "new-1", "volumes": [{"id": "new-v", "size_gb": 1}]}]}}}
    if isinstance(data, dict) and isinstance(data.get("projects"), dict):
        data = {"projects": {**bad["projects"], **data["projects"]}}  # a valid part first: it must roll back
    with pytest.raises(InventoryError, match=words):
        load(runtime, data)
    assert (count(runtime, SandboxServer), count(runtime, SandboxVolume), count(runtime, SandboxAttachment)) == before
    assert not volume_file(runtime.settings.volumes_dir, "huge-v").exists()


def test_an_unknown_top_level_key_is_refused(runtime):
    with pytest.raises(InventoryError, match=r"inventory: unknown key\(s\) \['projetcs'\] \(did you mean 'projects'\?\)"):
        load(runtime, {"projects": {}, "projetcs": {"p": {}}})


def test_volume_file_the_file_system_refuses_is_an_inventory_error(runtime, inventory):
    """A size the file system cannot hold (here: RLIMIT_FSIZE below it; on ext4 anything past 16 TiB) is refused
    with the volume named, nothing is loaded and no empty file is left behind."""
    before = (count(runtime, SandboxServer), count(runtime, SandboxVolume))
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (GIB, hard))
    try:
        with pytest.raises(InventoryError, match="volume fs-v: cannot make its 2 GiB file"):
            load(runtime, {"projects": {"p": {"volumes": [{"id": "fs-v", "size_gb": 2}]}}})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (count(runtime, SandboxServer), count(runtime, SandboxVolume)) == before
    assert not volume_file(runtime.settings.volumes_dir, "fs-v").exists()


def test_set_server_refuses_values_longer_than_their_columns(runtime, inventory):
    with runtime.sessions() as s:
        with pytest.raises(InventoryError, match="availability_zone .*at most 64"):
            set_server(s, WEB_1, availability_zone="a" * 65)
        with pytest.raises(InventoryError, match="name .*at most 255"):
            set_server(s, WEB_1, name="n" * 256)


def test_invalid_yaml_file(runtime, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("projects: [\n")
    with runtime.sessions() as s, pytest.raises(InventoryError, match="not valid YAML"):
        load_inventory_file(s, path, runtime.settings.volumes_dir)


# --- changing and deleting ----------------------------------------------------------------------------------


def test_set_server(runtime, inventory):
    with transaction(runtime.sessions) as s:
        set_server(s, WEB_1, status="error", task_state="resize_migrating", availability_zone="az9", name="w")
    web = facts(runtime, "demo", WEB_1)[WEB_1]
    assert (web.status, web.task_state, web.availability_zone, web.name) == ("ERROR", "resize_migrating", "az9", "w")
    with transaction(runtime.sessions) as s:
        set_server(s, WEB_1, task_state="")
    assert facts(runtime, "demo", WEB_1)[WEB_1].task_state is None
    with runtime.sessions() as s:
        with pytest.raises(InventoryError, match="no sandbox server"):
            set_server(s, "nope", status="ACTIVE")
        with pytest.raises(InventoryError, match="cannot change"):
            set_server(s, WEB_1, project_id="x")


def test_delete_volume_removes_its_file(runtime, inventory):
    path = volume_file(runtime.settings.volumes_dir, WEB_1_SYS)
    assert path.exists()
    with transaction(runtime.sessions) as s:
        assert delete_resource(s, WEB_1_SYS, runtime.settings.volumes_dir) == "volume"
    assert not path.exists()
    assert [v.id for v in facts(runtime, "demo", WEB_1)[WEB_1].volumes] == ["0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a02"]
    with runtime.sessions() as s, pytest.raises(InventoryError, match="no sandbox server or volume"):
        delete_resource(s, "nope", runtime.settings.volumes_dir)


# --- volume bytes -------------------------------------------------------------------------------------------


def test_volume_files_are_sparse_and_sized(runtime, inventory):
    path = volume_file(runtime.settings.volumes_dir, WEB_1_SYS)
    st = path.stat()
    assert st.st_size == GIB
    assert st.st_blocks * 512 < 1024 * 1024, "a fresh 1 GiB volume must not take real space"


def test_growing_a_volume_keeps_its_data(runtime, inventory):
    with runtime.sessions() as s:
        vol = s.get(SandboxVolume, WEB_1_SYS)
        write_volume(runtime.settings.volumes_dir, vol, 4096, io.BytesIO(b"keep me"))
    load(runtime, {"projects": {"demo": {"volumes": [{"id": WEB_1_SYS, "size_gb": 2}]}}})
    path = volume_file(runtime.settings.volumes_dir, WEB_1_SYS)
    assert path.stat().st_size == 2 * GIB
    with open(path, "rb") as fh:
        fh.seek(4096)
        assert fh.read(7) == b"keep me"


def test_write_then_hash(runtime, inventory):
    data = bytes(range(256)) * 4096 + b"tail"
    with runtime.sessions() as s:
        vol = s.get(SandboxVolume, WEB_1_SYS)
        assert write_volume(runtime.settings.volumes_dir, vol, 12345, io.BytesIO(data)) == len(data)
    expected = hashlib.sha256()
    expected.update(b"\0" * 12345)
    expected.update(data)
    remaining = GIB - 12345 - len(data)
    zeros = b"\0" * (4 * 1024 * 1024)
    while remaining:
        n = min(remaining, len(zeros))
        expected.update(zeros[:n])
        remaining -= n
    assert hash_volume(runtime.settings.volumes_dir, WEB_1_SYS) == expected.hexdigest()


@pytest.mark.parametrize("offset, size", [(GIB - 3, 4), (GIB, 1), (0, GIB + 1)])
def test_write_past_the_end_is_refused(runtime, inventory, offset, size):
    with runtime.sessions() as s:
        vol = s.get(SandboxVolume, WEB_1_SYS)
        with pytest.raises(InventoryError, match="past its end"):
            write_volume(runtime.settings.volumes_dir, vol, offset, io.BytesIO(b"x" * size) if size < 1024 else _Zeros(size))
    assert volume_file(runtime.settings.volumes_dir, WEB_1_SYS).stat().st_size == GIB


def test_write_exactly_to_the_end(runtime, inventory):
    with runtime.sessions() as s:
        vol = s.get(SandboxVolume, WEB_1_SYS)
        assert write_volume(runtime.settings.volumes_dir, vol, GIB - 4, io.BytesIO(b"last")) == 4


class _Zeros(io.RawIOBase):
    """``n`` zero bytes without holding them in memory."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return b"\0" * size


# --- the driver ---------------------------------------------------------------------------------------------


def test_driver_scopes_to_the_project(runtime, inventory):
    secret = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"
    assert set(facts(runtime, "demo", WEB_1, secret, "nope")) == {WEB_1}
    assert set(facts(runtime, "other-project", WEB_1, secret)) == {secret}
    assert set(facts(runtime, "demo", WEB_1, secret, all_tenants=True)) == {WEB_1, secret}


@pytest.mark.parametrize("n", [1, 100, 2500])
def test_driver_calls_do_not_grow_with_the_batch(runtime, inventory, n):
    ids = [WEB_1] + [f"00000000-0000-4000-8000-{i:012d}" for i in range(n - 1)]
    before = runtime.driver.calls
    got = runtime.driver.get_servers(CloudContext("demo"), ids)
    assert runtime.driver.calls - before == 1
    assert set(got) == {WEB_1}


def test_example_yaml_is_valid_yaml_with_every_outcome_commented():
    text = EXAMPLE_INVENTORY.read_text()
    yaml.safe_load(text)
    for code in ("6000", "6001", "6003", "6006", "6007", "6010", "6027", "6033", "result true"):
        assert code in text


def test_status_and_task_state_vocabulary(runtime, inventory):
    """The inventory loader and set_server take Nova's statuses and task states only."""
    with runtime.sessions() as s:
        with pytest.raises(InventoryError, match="status must be one of"):
            set_server(s, WEB_1, status="RUNNING")
        with pytest.raises(InventoryError, match="task_state must be one of"):
            set_server(s, WEB_1, task_state="making_coffee")
        bad = {"projects": {"p": {"servers": [{"name": "x", "status": "running", "volumes": []}]}}}
        with pytest.raises(InventoryError, match="status must be one of"):
            load_inventory(s, bad, runtime.settings.volumes_dir)
        bad = {"projects": {"p": {"servers": [{"name": "x", "task_state": "nap", "volumes": []}]}}}
        with pytest.raises(InventoryError, match="task_state must be one of"):
            load_inventory(s, bad, runtime.settings.volumes_dir)
        s.rollback()
    assert facts(runtime, "demo", WEB_1)[WEB_1].status == "ACTIVE"
