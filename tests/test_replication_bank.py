"""Bank-to-bank copies between two banks of different kinds (a local folder and the suite's real S3 server):
only missing chunks are sent, an interrupted copy resumes, the index appears last, different keys re-encode,
the target's GC keeps an unfinished copy's chunks, and a restore takes a damaged chunk from the replica."""

from __future__ import annotations

import os

import pytest
from bank_helpers import S3_ENDPOINT, MiB, BankEnv, s3_bank_settings, sha

from opencsbs.bank import IndexNotFound, open_bank
from opencsbs.bank.layout import CHUNK_SIZE, chunk_key, index_key
from opencsbs.bank.replicate import copy_index
from opencsbs.config import ReplicaSettings, Settings


@pytest.fixture(params=["local->s3", "s3->local"])
def pair(request, tmp_path):
    """(env, primary, replica, settings): the primary bank of one kind, a replica of the other kind."""
    from conftest import require_component

    require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start")
    primary_kind, replica_kind = request.param.split("->")
    env = BankEnv(primary_kind, tmp_path)
    if replica_kind == "s3":
        rs = ReplicaSettings(name="dr", **s3_bank_settings().model_dump())
    else:
        rs = ReplicaSettings(name="dr", backend="local", path=tmp_path / "replica", fsync=False)
    settings = Settings(data_dir=tmp_path / "data", bank=env.bank_settings, replicas=[rs])
    primary = open_bank(settings)
    replica = open_bank(settings, "dr")
    env.opened += [primary, replica]
    yield env, primary, replica, settings
    env.close()


def test_copy_then_incremental_sends_only_new_chunks(pair):
    env, primary, replica, _ = pair
    data = os.urandom(6 * CHUNK_SIZE)
    full = env.image("d.img", data)
    env.backup(primary, full, "checkpoints/c1/v1")
    first = copy_index(primary, replica, "checkpoints/c1/v1")
    assert first.sent_chunks == 6 and first.present_chunks == 0
    assert sha(env.restore(replica, "checkpoints/c1/v1", "r1.img")) == sha(full)

    changed = env.image("d2.img", data, writes=[(CHUNK_SIZE * 2 + 5, b"new bytes"), (CHUNK_SIZE * 5, b"x" * 100)])
    env.backup(primary, changed, "checkpoints/c2/v1", base_index="checkpoints/c1/v1")
    asked = []
    head = replica.store.head
    replica.store.head = lambda key: asked.append(key) or head(key)  # count the requests to the replica
    try:
        second = copy_index(primary, replica, "checkpoints/c2/v1")
    finally:
        del replica.store.head
    # the two changed regions are pieces: the 6 chunks of the first backup (4 whole, 2 sliced) are there, only the
    # two new 64 KiB extents travel
    assert second.sent_chunks == 2 and second.present_chunks == 6
    # the base's copy is on the replica: its chunks are known there, only the new ones are asked for
    assert len([k for k in asked if k.startswith("chunks/")]) == 2
    idx2 = primary.read_index("checkpoints/c2/v1")
    new_keys = [chunk_key(a) for a in idx2.addresses() - primary.read_index("checkpoints/c1/v1").addresses()]
    assert len(new_keys) == 2
    assert second.sent_bytes == sum(replica.store.head(k).size for k in new_keys) < 2 * 70_000
    assert sha(env.restore(replica, "checkpoints/c2/v1", "r2.img")) == sha(changed)
    # a copy again is a no-op
    assert copy_index(primary, replica, "checkpoints/c2/v1").skipped


def test_interrupted_copy_leaves_no_index_and_resumes(pair):
    env, primary, replica, _ = pair
    path = env.image("d.img", os.urandom(8 * CHUNK_SIZE))
    env.backup(primary, path, "checkpoints/c1/v1")

    class Killed(Exception):
        pass

    def die_after_three(done, total):
        if done >= 3:
            raise Killed

    with pytest.raises(Killed):
        copy_index(primary, replica, "checkpoints/c1/v1", progress=die_after_three)
    with pytest.raises(IndexNotFound):
        replica.read_index("checkpoints/c1/v1")  # not a backup on the target yet
    assert not list(replica.store.list("leases/"))  # the lease went with the copy
    resumed = copy_index(primary, replica, "checkpoints/c1/v1")
    assert resumed.present_chunks >= 3 and resumed.sent_chunks + resumed.present_chunks == 8
    assert resumed.sent_chunks <= 5
    assert sha(env.restore(replica, "checkpoints/c1/v1")) == sha(path)


def test_target_gc_keeps_the_chunks_of_a_copy_in_flight(pair):
    env, primary, replica, _ = pair
    path = env.image("d.img", os.urandom(4 * CHUNK_SIZE))
    env.backup(primary, path, "checkpoints/c1/v1")
    reports = []

    def gc_midway(done, total):
        if done == 2 and not reports:
            reports.append(replica.gc(grace_seconds=0))

    copy_index(primary, replica, "checkpoints/c1/v1", progress=gc_midway)
    assert reports[0].in_flight_backups == 1 and reports[0].deleted_chunks == 0
    assert sha(env.restore(replica, "checkpoints/c1/v1")) == sha(path)


def test_copy_to_a_bank_with_its_own_key_re_encodes(tmp_path):
    from conftest import require_component

    require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start")
    key = tmp_path / "replica.key"
    key.write_bytes(os.urandom(32))
    rs = ReplicaSettings(name="dr", encryption_key_file=key, **s3_bank_settings().model_dump(
        exclude={"encryption_key_file"}))
    env = BankEnv("local", tmp_path)
    settings = Settings(data_dir=tmp_path / "data", bank=env.bank_settings, replicas=[rs])
    primary, replica = open_bank(settings), open_bank(settings, "dr")
    env.opened += [primary, replica]
    path = env.image("d.img", os.urandom(2 * CHUNK_SIZE) + bytes(CHUNK_SIZE) + b"z" * MiB)
    env.backup(primary, path, "checkpoints/c1/v1")
    stats = copy_index(primary, replica, "checkpoints/c1/v1")
    assert stats.sent_chunks == 3
    src, dst = primary.read_index("checkpoints/c1/v1"), replica.read_index("checkpoints/c1/v1")
    assert dst.hash == "blake3-keyed" and dst.chunks[2] is None
    assert set(src.addresses()).isdisjoint(dst.addresses())  # addressed with the replica's key
    assert sha(env.restore(replica, "checkpoints/c1/v1")) == sha(path)
    blob = replica.store.get(index_key("checkpoints/c1/v1"))
    assert b"checkpoints" not in blob  # the index is encrypted too
    env.close()


def test_restore_takes_a_damaged_chunk_from_the_replica(pair):
    env, primary, replica, settings = pair
    path = env.image("d.img", os.urandom(3 * CHUNK_SIZE + 777))
    env.backup(primary, path, "checkpoints/c1/v1")
    copy_index(primary, replica, "checkpoints/c1/v1")
    idx = primary.read_index("checkpoints/c1/v1")
    damaged, missing = chunk_key(idx.chunks[1]), chunk_key(idx.chunks[3])
    blob = bytearray(primary.store.get(damaged))
    blob[-10] ^= 0xFF
    primary.store.put(damaged, bytes(blob))
    primary.store.delete(missing)
    out = env.restore(primary, "checkpoints/c1/v1")
    assert sha(out) == sha(path)
    # the primary's chunks were repaired from the replica
    assert primary.verify().ok
