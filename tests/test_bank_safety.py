"""Bank garbage collection, verify and encryption, on the local backend and on the real S3 server."""

from __future__ import annotations

import os
import threading
import time

import pytest
from bank_helpers import MiB, env, sha  # noqa: F401 - env is a fixture
from blake3 import blake3
from click.testing import CliRunner

from opencsbs.bank import CHUNK_SIZE, BankKeyError, ChunkDamaged, ChunkMissing, Codec, ObjectNotFound
from opencsbs.bank.layout import chunk_key, index_key
from opencsbs.blockio.files import FileBlockReader


def _settle(env):
    """Let the clock move past the objects just written (S3 LastModified has whole seconds, local file times
    follow the kernel's coarse clock)."""
    time.sleep(1.1 if env.backend == "s3" else 0.05)


class GatedReader:
    """A FileBlockReader that stops after ``gate_after`` reads until ``go`` is set (a backup in flight)."""

    def __init__(self, path, gate_after: int):
        self.inner = FileBlockReader(path)
        self.size = self.inner.size
        self.gate_after = gate_after
        self.reads = 0
        self.waiting = threading.Event()
        self.go = threading.Event()

    def read(self, offset, length):
        if self.reads == self.gate_after:
            self.waiting.set()
            assert self.go.wait(60)
        self.reads += 1
        return self.inner.read(offset, length)

    def allocated_ranges(self):
        return None

    def close(self):
        self.inner.close()


def wait_for_dedup_checks(bank, addresses, timeout=60.0):
    """Wraps the bank's store so the test can wait until a backup has looked up (and, when old, renewed)
    every one of ``addresses``; returns the waiting function."""
    seen = set()
    cond = threading.Condition()
    orig_head, orig_touch = bank.store.head, bank.store.touch

    def head(key):
        info = orig_head(key)
        with cond:
            seen.add(("head", key))
            cond.notify_all()
        return info

    def touch(key):
        orig_touch(key)
        with cond:
            seen.add(("touch", key))
            cond.notify_all()

    bank.store.head, bank.store.touch = head, touch

    def wait(kind="head"):
        keys = {(kind, chunk_key(a)) for a in addresses}
        with cond:
            assert cond.wait_for(lambda: keys <= seen, timeout)

    return wait


def test_gc_frees_exactly_the_unique_chunks_of_a_deleted_index(env):
    bank = env.open()
    shared = os.urandom(2 * CHUNK_SIZE)
    a = env.image("a.img", shared + os.urandom(3 * CHUNK_SIZE))
    b = env.image("b.img", shared + os.urandom(CHUNK_SIZE))
    env.backup(bank, a, "checkpoints/a/v")
    env.backup(bank, b, "checkpoints/b/v")
    unique = bank.read_index("checkpoints/a/v").addresses() - bank.read_index("checkpoints/b/v").addresses()
    assert len(unique) == 3
    _settle(env)
    nothing = bank.gc(grace_seconds=0)
    assert nothing.deleted_chunks == 0 and nothing.referenced_chunks == 6
    bank.delete_index("checkpoints/a/v")
    report = bank.gc(grace_seconds=0)
    assert report.deleted_chunks == 3
    assert report.freed_bytes >= 3 * CHUNK_SIZE
    left = {i.key.rsplit("/", 1)[-1] for i in bank.store.list("chunks/")}
    assert left == bank.read_index("checkpoints/b/v").addresses()
    assert not (left & unique)
    assert sha(env.restore(bank, "checkpoints/b/v")) == sha(b)
    assert bank.verify().ok


def test_gc_grace_keeps_recent_unreferenced_chunks(env):
    bank = env.open()
    a = env.image("a.img", os.urandom(2 * CHUNK_SIZE))
    env.backup(bank, a, "checkpoints/a/v")
    bank.delete_index("checkpoints/a/v")
    report = bank.gc(grace_seconds=3600)
    assert report.deleted_chunks == 0 and report.kept_recent == 2


def test_gc_never_deletes_chunks_of_a_backup_in_flight(env):
    bank = env.open()
    old = os.urandom(3 * CHUNK_SIZE)
    old_img = env.image("old.img", old)
    env.backup(bank, old_img, "checkpoints/old/v")
    if env.backend == "local":  # make the old chunks two days old: the backup must renew those it reuses
        for info in bank.store.list("chunks/"):
            past = time.time() - 2 * 86400
            os.utime(bank.store.root / info.key, (past, past))
    # the running backup reuses the old index's chunks (dedup), then writes new ones
    new_img = env.image("new.img", old + os.urandom(3 * CHUNK_SIZE))
    reader = GatedReader(new_img, gate_after=4)
    result = {}

    def run():
        try:
            result["stats"] = bank.backup_volume(reader, "checkpoints/new/v")
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    wait = wait_for_dedup_checks(bank, bank.read_index("checkpoints/old/v").addresses())
    t = threading.Thread(target=run)
    t.start()
    assert reader.waiting.wait(60)
    wait("touch" if env.backend == "local" else "head")  # the backup has found (and renewed) the old chunks
    bank.delete_index("checkpoints/old/v")  # its chunks are now referenced by no index
    _settle(env)
    report = bank.gc(grace_seconds=0)
    assert report.in_flight_backups == 1
    assert report.deleted_chunks == 0
    reader.go.set()
    t.join(60)
    reader.close()
    assert "error" not in result, result
    assert result["stats"].reused_chunks == 3 and result["stats"].new_chunks == 3
    assert sha(env.restore(bank, "checkpoints/new/v")) == sha(new_img)
    assert bank.verify().ok
    # once the backup is done and nothing else runs, a GC finds nothing to free
    _settle(env)
    assert bank.gc(grace_seconds=0).deleted_chunks == 0


def test_backup_that_overlapped_a_gc_writes_a_vanished_chunk_again(env):
    bank = env.open()
    data = os.urandom(2 * CHUNK_SIZE)
    env.backup(bank, env.image("a.img", data), "checkpoints/a/v")
    img = env.image("b.img", data + os.urandom(2 * CHUNK_SIZE))
    reader = GatedReader(img, gate_after=3)
    result = {}

    def run():
        try:
            result["stats"] = bank.backup_volume(reader, "checkpoints/b/v")
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    wait = wait_for_dedup_checks(bank, bank.read_index("checkpoints/a/v").addresses())
    t = threading.Thread(target=run)
    t.start()
    assert reader.waiting.wait(60)
    wait()
    bank.gc(grace_seconds=0)
    # a chunk the backup found present disappears behind its back (lost by the storage, or a GC race)
    first = bank.read_index("checkpoints/a/v").chunks[0]
    bank.store.delete(chunk_key(first))
    reader.go.set()
    t.join(60)
    reader.close()
    # the backup never references a missing chunk: it wrote the vanished one again from its volume
    assert "error" not in result, result
    assert result["stats"].rewritten_chunks == 1
    assert bank.store.head(chunk_key(first)) is not None
    assert bank.verify().ok


def test_gc_removes_chunks_of_an_interrupted_backup(env):
    bank = env.open()
    img = env.image("a.img", os.urandom(4 * CHUNK_SIZE))
    reader = GatedReader(img, gate_after=2)
    reader.go.set()

    class Boom(Exception):
        pass

    def failing_read(offset, length, _orig=reader.read):
        if offset >= 2 * CHUNK_SIZE:
            raise Boom("disk went away")
        return _orig(offset, length)

    reader.read = failing_read
    with pytest.raises(Boom):
        bank.backup_volume(reader, "checkpoints/x/v")
    assert bank.list_indexes() == []
    assert len(list(bank.store.list("leases/"))) == 0
    _settle(env)
    report = bank.gc(grace_seconds=0)
    assert report.deleted_chunks == 2
    assert list(bank.store.list("chunks/")) == []


def test_verify_detects_a_flipped_byte_and_a_missing_chunk(env):
    bank = env.open()
    img = env.image("a.img", os.urandom(3 * CHUNK_SIZE) + bytes(CHUNK_SIZE))
    env.backup(bank, img, "checkpoints/a/v")
    clean = bank.verify()
    assert clean.ok and clean.indexes_checked == 1 and clean.chunks_checked == 3
    assert clean.bytes_checked == 3 * CHUNK_SIZE
    c0, c1, c2, _ = bank.read_index("checkpoints/a/v").chunks
    blob = bytearray(bank.store.get(chunk_key(c0)))
    blob[len(blob) // 2] ^= 0x01
    bank.store.put(chunk_key(c0), bytes(blob))
    bank.store.delete(chunk_key(c1))
    report = bank.verify()
    assert not report.ok
    assert [k for k, _ in report.damaged_chunks] == [chunk_key(c0)]
    assert report.missing_chunks == [(c1, ["checkpoints/a/v"])]
    with pytest.raises((ChunkDamaged, ChunkMissing)):
        env.restore(bank, "checkpoints/a/v")
    # a damaged index is reported too
    raw = bytearray(bank.store.get(index_key("checkpoints/a/v")))
    raw[-3] ^= 0xFF
    bank.store.put(index_key("checkpoints/a/v"), bytes(raw))
    assert [n for n, _ in bank.verify().damaged_indexes] == ["checkpoints/a/v"]


def _key_file(tmp_path, name="bank.key", hexkey=True):
    key = os.urandom(32)
    path = tmp_path / name
    path.write_text(key.hex() + "\n") if hexkey else path.write_bytes(key)
    return path, key


def test_encrypted_round_trip_and_no_plaintext_in_the_bank(env, tmp_path):
    key_path, key = _key_file(tmp_path)
    bank = env.open(encryption_key_file=key_path)
    marker = b"PLAINTEXT-MARKER-0123456789-"
    chunk0 = marker * (CHUNK_SIZE // len(marker)) + marker[:CHUNK_SIZE % len(marker)]
    img = env.image("a.img", chunk0 + os.urandom(CHUNK_SIZE) + bytes(CHUNK_SIZE) + b"tail" * 1000)
    env.backup(bank, img, "checkpoints/enc/v", metadata={"volume_name": "SECRETVOLUME"})
    assert sha(env.restore(bank, "checkpoints/enc/v")) == sha(img)
    plain_hashes = [blake3(chunk0).hexdigest().encode(), blake3(chunk0).hexdigest()[:16].encode()]
    everything = b""
    for info in bank.store.list(""):
        everything += info.key.encode() + b"\n" + bank.store.get(info.key)
    assert marker not in everything and b"tail" * 10 not in everything
    assert b"SECRETVOLUME" not in everything
    for h in plain_hashes:
        assert h not in everything
    assert bank.verify().ok


def test_wrong_or_missing_key_is_refused(env, tmp_path):
    key_path, _ = _key_file(tmp_path)
    bank = env.open(encryption_key_file=key_path)
    env.backup(bank, env.image("a.img", os.urandom(CHUNK_SIZE)), "checkpoints/enc/v")
    other, _ = _key_file(tmp_path, "other.key", hexkey=False)
    with pytest.raises(BankKeyError):
        env.open(encryption_key_file=other)
    with pytest.raises(BankKeyError):
        env.open()
    # even past the key check, a wrong key cannot decrypt a chunk or an index
    wrong = Codec(os.urandom(32))
    addr = bank.read_index("checkpoints/enc/v").chunks[0]
    with pytest.raises(ChunkDamaged, match="authentication failed"):
        wrong.decode_chunk(bytes.fromhex(addr), bank.store.get(chunk_key(addr)), CHUNK_SIZE)
    with pytest.raises(ChunkDamaged, match="authentication failed"):
        wrong.decode_index("checkpoints/enc/v", bank.store.get(index_key("checkpoints/enc/v")))


def test_cli_verify_and_gc(env, tmp_path):
    from opencsbs.cli import main

    key_path, _ = _key_file(tmp_path)
    bank = env.open(encryption_key_file=key_path)
    img = env.image("a.img", os.urandom(2 * CHUNK_SIZE))
    env.backup(bank, img, "checkpoints/a/v")
    env.backup(bank, env.image("b.img", os.urandom(CHUNK_SIZE)), "checkpoints/b/v")
    cfg = tmp_path / "cfg.yaml"
    bs = env.bank_settings.model_dump(mode="json", exclude_none=True)
    bs["encryption_key_file"] = str(key_path)
    import yaml

    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "bank": bs}))
    runner = CliRunner()
    ok = runner.invoke(main, ["--config", str(cfg), "bank", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "2 indexes" in ok.output and "3 chunks" in ok.output and "no damage" in ok.output
    bank.delete_index("checkpoints/b/v")
    _settle(env)
    gc = runner.invoke(main, ["--config", str(cfg), "bank", "gc", "--grace", "0"])
    assert gc.exit_code == 0, gc.output
    assert "deleted 1 chunks" in gc.output
    addr = bank.read_index("checkpoints/a/v").chunks[1]
    bank.store.delete(chunk_key(addr))
    bad = runner.invoke(main, ["--config", str(cfg), "bank", "verify"])
    assert bad.exit_code == 1
    assert addr in bad.output and "missing" in bad.output
    other, _ = _key_file(tmp_path, "other.key")
    bs["encryption_key_file"] = str(other)
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "bank": bs}))
    wrong = runner.invoke(main, ["--config", str(cfg), "bank", "verify"])
    assert wrong.exit_code == 1 and "key" in wrong.output


def test_backend_touch_renews_a_chunk(env):
    """GC safety relies on renewing reused chunks: the backend's touch must move the mtime and keep the data."""
    bank = env.open()
    bank.store.put("chunks/zz/probe", b"payload")
    before = bank.store.head("chunks/zz/probe").mtime
    time.sleep(1.1 if env.backend == "s3" else 0.05)
    bank.store.touch("chunks/zz/probe")
    assert bank.store.head("chunks/zz/probe").mtime > before
    assert bank.store.get("chunks/zz/probe") == b"payload"
    bank.store.delete("chunks/zz/probe")
    with pytest.raises(ObjectNotFound):
        bank.store.touch("chunks/zz/probe")


def test_a_killed_gc_leaves_no_lasting_marker(env, monkeypatch):
    """``kill -9`` of ``opencsbs bank gc`` leaves its ``gc/running/<id>`` marker (owner host and pid inside). Once
    the marker's lease has passed without renewal, backups no longer count it as a GC in progress (they used to
    re-check every reused chunk for 24 h), and the next GC removes it; a live GC's marker still counts."""
    import json
    import socket
    import subprocess
    import sys

    from opencsbs.bank import gc as gc_mod

    bank = env.open()
    env.backup(bank, env.image("a.img", os.urandom(2 * CHUNK_SIZE)), "checkpoints/a/v")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    doc = {"host": socket.gethostname(), "pid": int(dead.stdout), "started_at": "2026-01-01T00:00:00.000000"}
    bank.store.put("gc/running/killed", json.dumps(doc).encode(), sync=False)
    monkeypatch.setattr(gc_mod, "GC_MARKER_LEASE", 1.0)
    # a backup that ran while that GC could still delete: re-checks
    assert gc_mod.gc_overlapped(bank.store, time.time() - 60)
    time.sleep(2.2)
    assert not gc_mod.gc_overlapped(bank.store, time.time())  # a backup started after the lease: no re-check
    # a live GC elsewhere on this host (this process) still counts, however recent the backup
    bank.store.put("gc/running/live", json.dumps({**doc, "pid": os.getpid()}).encode(), sync=False)
    assert gc_mod.gc_overlapped(bank.store, time.time() + 3600)
    bank.store.delete("gc/running/live")
    report = bank.gc(grace_seconds=0)
    assert report.stale_gc_markers == 1 and report.skipped_reason is None
    assert [i.key for i in bank.store.list("gc/running/")] == []
    finished = json.loads(bank.store.get("gc/finished"))
    assert {"freed_bytes", "reclaimable_bytes", "deleted_chunks"} <= set(finished)


def test_a_dead_owners_marker_is_removed_at_once_on_its_host(env):
    """A marker whose owner is a dead process of this host is stale before its lease ends: the next GC drops it."""
    import json
    import socket
    import subprocess
    import sys

    bank = env.open()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    bank.store.put("gc/running/killed", json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}).encode(),
                   sync=False)
    assert bank.gc(grace_seconds=0).stale_gc_markers == 1
    assert [i.key for i in bank.store.list("gc/running/")] == []
