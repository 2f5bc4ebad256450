"""``opencsbs.clouds.rbd`` against a real Ceph: snapshots, allocated and changed extents from ``diff_iterate``, the
read-ahead reader and the aio writer, through the bank (full backup, incremental reading only the changed chunks,
restore byte for byte), and the error paths a user meets (a snapshot deleted during the copy, an unreachable
cluster, a missing keyring, missing bindings).

Needs a Ceph cluster (``scripts/services/ceph.sh start``): env ``OPENCSBS_TEST_CEPH_CONF``,
``OPENCSBS_TEST_CEPH_USER`` (a user with ``profile rbd`` on the pool), ``OPENCSBS_TEST_CEPH_KEYRING`` (optional)
and ``OPENCSBS_TEST_CEPH_POOL``.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from pathlib import Path

import pytest

from conftest import require_component
from opencsbs.bank.layout import EXTENT_ALIGN, PACK_SIZE
from opencsbs.core.errors import CSBSError

MIB = 1024 * 1024
CONF = os.environ.get("OPENCSBS_TEST_CEPH_CONF")
USER = os.environ.get("OPENCSBS_TEST_CEPH_USER", "admin")
KEYRING = os.environ.get("OPENCSBS_TEST_CEPH_KEYRING") or None
POOL = os.environ.get("OPENCSBS_TEST_CEPH_POOL", "rbd")

pytestmark = pytest.mark.ceph


def _bindings_ok() -> bool:
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster():
    require_component(bool(CONF) and os.path.isfile(CONF or ""), "no Ceph cluster (scripts/services/ceph.sh start)")
    require_component(_bindings_ok(), "python3-rbd/python3-rados not visible to this Python (see clouds/rbd.py)")
    from opencsbs.clouds.rbd import Cluster

    c = Cluster(CONF, USER, KEYRING, connect_timeout=10)
    yield c
    c.close()


class Image:
    """A throw-away image of the test pool (layering, exclusive-lock, object-map, fast-diff), removed with its
    snapshots at teardown; ``self.model`` holds the bytes it should contain."""

    def __init__(self, cluster, size: int):
        from opencsbs.clouds.rbd import bindings

        _rados, rbd = bindings()
        self.cluster, self.size = cluster, size
        self.name = f"test-rbd-{uuid.uuid4().hex[:10]}"
        feats = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
                 | rbd.RBD_FEATURE_FAST_DIFF)
        rbd.RBD().create(cluster.ioctx(POOL), self.name, size, old_format=False, features=feats)
        self.model = bytearray(size)

    def write(self, offset: int, data: bytes) -> None:
        with self.cluster.image(POOL, self.name) as img:
            img.write(data, offset)
            img.flush()
        self.model[offset:offset + len(data)] = data

    def remove(self) -> None:
        from opencsbs.clouds.rbd import bindings

        _rados, rbd = bindings()
        try:
            for snap in self.cluster.list_snapshots(POOL, self.name):
                self.cluster.remove_snapshot(POOL, self.name, snap.name)
            rbd.RBD().remove(self.cluster.ioctx(POOL), self.name)
        except (CSBSError, rbd.ImageNotFound):
            pass


@pytest.fixture
def images(cluster):
    made: list[Image] = []

    def make(size: int) -> Image:
        made.append(Image(cluster, size))
        return made[-1]

    yield make
    for image in made:
        image.remove()


@pytest.fixture
def bank(tmp_path: Path):
    from opencsbs.bank import Bank
    from opencsbs.bank.backends import LocalStore
    from opencsbs.bank.codec import Codec

    b = Bank(LocalStore(tmp_path / "bank"), Codec(None))
    yield b
    b.close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_allocated_extents_snapshot_read_and_changed_extents(cluster, images):
    img = images(64 * MIB)
    img.write(0, b"a" * 4096)
    img.write(10 * MIB, random.Random(1).randbytes(5 * MIB))
    img.write(40 * MIB + 7, b"c" * 100)
    s1 = cluster.create_snapshot(POOL, img.name, "s1")
    assert cluster.create_snapshot(POOL, img.name, "s1") == s1  # idempotent
    first = bytes(img.model)
    alloc = cluster.allocated_ranges(POOL, img.name, "s1")
    # every written byte is inside the allocated extents, and the big holes are not
    for off, n in ((0, 4096), (10 * MIB, 5 * MIB), (40 * MIB + 7, 100)):
        assert any(o <= off and off + n <= o + ln for o, ln in alloc), (off, alloc)
    assert sum(ln for _, ln in alloc) < 16 * MIB

    img.write(20 * MIB, b"d" * 8192)
    img.write(10 * MIB + 100, b"e" * 10)
    s2 = cluster.create_snapshot(POOL, img.name, "s2")
    assert s2.id > s1.id
    assert cluster.changed_ranges(POOL, img.name, "s2", "s1") == [(10 * MIB + 100, 10), (20 * MIB, 8192)]
    assert cluster.changed_ranges(POOL, img.name, "s1", "s2") is None  # not older: unknown
    assert cluster.changed_ranges(POOL, img.name, "s2", "gone") is None

    # the snapshot keeps its bytes while the image changes
    reader = cluster.open_reader(POOL, img.name, "s1")
    try:
        assert reader.size == 64 * MIB
        got = b"".join(reader.read(off, 4 * MIB) for off in range(0, reader.size, 4 * MIB))
    finally:
        reader.close()
    assert _sha(got) == _sha(first)
    assert [s.name for s in cluster.list_snapshots(POOL, img.name)] == ["s1", "s2"]

    assert cluster.remove_snapshot(POOL, img.name, "s1") is True
    assert cluster.remove_snapshot(POOL, img.name, "s1") is False  # idempotent
    assert cluster.changed_ranges(POOL, img.name, "s2", "s1") is None


def test_protected_snapshot_is_unprotected_then_removed(cluster, images):
    img = images(8 * MIB)
    cluster.create_snapshot(POOL, img.name, "kept")
    with cluster.image(POOL, img.name) as handle:
        handle.protect_snap("kept")
    assert cluster.remove_snapshot(POOL, img.name, "kept") is True
    assert cluster.list_snapshots(POOL, img.name) == []
    assert cluster.remove_snapshot(POOL, "no-such-image", "kept") is False


def test_bank_full_then_incremental_reads_only_changed_extents_and_restores_exactly(cluster, images, bank):
    size = 96 * MIB
    img = images(size)
    rnd = random.Random(7)
    for off in range(0, 64 * MIB, 4 * MIB):  # two thirds data, the rest never written
        img.write(off, rnd.randbytes(4 * MIB))
    cluster.create_snapshot(POOL, img.name, "b1")
    full_model = bytes(img.model)

    reader = cluster.open_reader(POOL, img.name, "b1")
    try:
        full = bank.backup_volume(reader, "v/full")
        full_requested = reader.bytes_read
    finally:
        reader.close()
    assert full.read_bytes == 64 * MIB  # the holes are not read
    assert full_requested == 64 * MIB  # read-ahead asked for nothing more

    # about 1 % scattered in small writes over 3 of the 24 chunks
    changed_chunks = {1, 9, 14}
    for chunk in changed_chunks:
        for k in range(8):
            img.write(chunk * 4 * MIB + k * 131072 + 512, rnd.randbytes(4096))
    cluster.create_snapshot(POOL, img.name, "b2")
    changed = cluster.changed_ranges(POOL, img.name, "b2", "b1")
    assert sum(n for _, n in changed) == 3 * 8 * 4096

    reader = cluster.open_reader(POOL, img.name, "b2", focus=changed)
    try:
        inc = bank.backup_volume(reader, "v/inc", base_index="v/full", changed_ranges=changed)
        inc_requested = reader.bytes_read
    finally:
        reader.close()
    # each 4 KiB write lies in its own 64 KiB extent (the bank's piece granularity): 8 extents per chunk are read,
    # and stored as pieces in packs of at most 1 MiB (docs/bank.md, "Pieces")
    assert inc.read_bytes == len(changed_chunks) * 8 * EXTENT_ALIGN
    assert inc_requested == len(changed_chunks) * 8 * EXTENT_ALIGN
    assert inc.patched_regions == len(changed_chunks)
    assert inc.new_chunks == -(-len(changed_chunks) * 8 * EXTENT_ALIGN // PACK_SIZE)

    # restore each backup into a fresh image: byte for byte
    for index, model in (("v/full", full_model), ("v/inc", bytes(img.model))):
        target = images(size)
        target.write(70 * MIB, b"\xff" * MIB)  # stale bytes where the backup has zeros
        writer = cluster.open_writer(POOL, target.name)
        try:
            stats = bank.restore_volume(index, writer)
        finally:
            writer.close()
        assert stats.written_bytes == 64 * MIB
        reader = cluster.open_reader(POOL, target.name, cluster.create_snapshot(POOL, target.name, "check").name)
        try:
            got = b"".join(reader.read(off, 4 * MIB) for off in range(0, size, 4 * MIB))
        finally:
            reader.close()
        assert _sha(got) == _sha(model)


def test_writer_refuses_writes_past_the_end(cluster, images):
    img = images(4 * MIB)
    writer = cluster.open_writer(POOL, img.name)
    try:
        with pytest.raises(CSBSError, match="past its end"):
            writer.write(4 * MIB - 10, b"x" * 20)
    finally:
        writer.close()


def test_snapshot_deleted_during_the_copy_leaves_no_backup(cluster, images, bank):
    """An open handle keeps reading a removed snapshot, as zeros: the bank must not record such a copy."""
    from opencsbs.bank import IndexNotFound

    img = images(32 * MIB)
    for off in range(0, 32 * MIB, 4 * MIB):
        img.write(off, random.Random(off).randbytes(4 * MIB))
    cluster.create_snapshot(POOL, img.name, "doomed")
    img.write(8 * MIB, b"new" * MIB)  # the snapshot's own data now lives only in its clones
    reader = cluster.open_reader(POOL, img.name, "doomed", read_ahead=2)

    class Deleting:
        """Deletes the snapshot after the first chunk, as a volume deleted mid-copy would."""

        size = reader.size

        def __init__(self):
            self.n = 0

        def read(self, off, n):
            self.n += 1
            if self.n == 2:
                cluster.remove_snapshot(POOL, img.name, "doomed")
            return reader.read(off, n)

        def allocated_ranges(self):
            return reader.allocated_ranges()

        def verify(self):
            reader.verify()

    try:
        with pytest.raises(CSBSError) as err:
            bank.backup_volume(Deleting(), "v/doomed")
    finally:
        reader.close()
    assert "was deleted during the copy" in err.value.error_msg and "doomed" in err.value.error_msg
    with pytest.raises(IndexNotFound):
        bank.read_index("v/doomed")


def test_unreachable_cluster_and_missing_keyring(tmp_path: Path, cluster):
    from opencsbs.clouds.rbd import CephUnavailable, Cluster

    conf = tmp_path / "ceph.conf"
    text = Path(CONF).read_text()
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("mon_host")]
    lines.insert(1, "mon_host = 127.0.0.1:9")  # nothing listens there
    conf.write_text("\n".join(lines) + "\n")
    with pytest.raises(CephUnavailable, match="no monitor answered"):
        Cluster(conf, USER, KEYRING, connect_timeout=2).ioctx(POOL)
    with pytest.raises(CephUnavailable, match="no keyring"):
        Cluster(CONF, "nobody-here", tmp_path / "missing.keyring", connect_timeout=5).ioctx(POOL)
    with pytest.raises(ValueError, match="does not exist"):
        Cluster(tmp_path / "nope.conf", USER).check_settings()


def test_error_translation_names_what_a_user_understands(cluster):
    from opencsbs.clouds.rbd import CephUnavailable, bindings, ceph_error

    rados, rbd = bindings()
    assert "is full" in ceph_error(rbd.NoSpace("x", errno=28), "RBD image p/v").error_msg
    assert "is full" in ceph_error(rbd.DiskQuotaExceeded("x", errno=122), "RBD image p/v").error_msg
    assert "not allowed" in ceph_error(rbd.PermissionError("x", errno=1), "RBD image p/v").error_msg
    assert isinstance(ceph_error(rados.TimedOut("x", errno=110), "RBD image p/v"), CephUnavailable)


def test_missing_bindings_say_how_to_install_them(monkeypatch):
    import builtins

    from opencsbs.clouds import rbd as rbd_mod

    real_import = builtins.__import__

    def no_ceph(name, *args, **kwargs):
        if name in ("rados", "rbd"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(rbd_mod, "_modules", None)
    monkeypatch.setattr(builtins, "__import__", no_ceph)
    with pytest.raises(rbd_mod.RbdBindingsMissing, match="python3-rbd"):
        rbd_mod.bindings()
    with pytest.raises(ValueError, match="python3-rbd"):
        rbd_mod.Cluster("/etc/ceph/ceph.conf").check_settings()


def test_serve_checks_the_rbd_settings_at_start_and_says_what_is_missing(tmp_path: Path):
    """``opencsbs serve`` with the OpenStack data side configured stops with one line naming the missing piece."""
    import subprocess
    import sys

    import yaml

    keyring = tmp_path / "ceph.client.opencsbs.keyring"
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\nmon_host = 127.0.0.1:9\n")
    config = tmp_path / "opencsbs.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "cloud": {
        "driver": "openstack", "openstack_cloud": "csbs",
        "openstack_rbd_backends": {"ceph": {"conf": str(conf), "user": "opencsbs", "keyring": str(keyring)}}}}))
    from conftest import free_port

    proc = subprocess.run([sys.executable, "-m", "opencsbs", "--config", str(config), "serve", "--port",
                           str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    if _bindings_ok():
        assert lines[0] == (f"Error: invalid settings: cloud.openstack_rbd_backends.ceph: Ceph keyring {keyring} "
                            "of client.opencsbs cannot be read")
    else:
        assert "python3-rbd" in lines[0]
