"""Bank round trips, dedup and incremental backups on the local backend and on the real S3 server."""

from __future__ import annotations

import os

import pytest
from bank_helpers import MiB, env, sha  # noqa: F401 - env is a fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencsbs.bank import CHUNK_SIZE, BankError, IndexNotFound
from opencsbs.bank.layout import EXTENT_ALIGN
from opencsbs.blockio.files import FileBlockReader


@pytest.mark.parametrize("kind", ["random", "zeros", "mixed", "odd"])
def test_round_trip_is_byte_exact(env, kind):
    bank = env.open()
    if kind == "random":
        path = env.image("d.img", os.urandom(12 * MiB))
    elif kind == "zeros":
        path = env.image("d.img", bytes(9 * MiB))
    elif kind == "mixed":
        path = env.image("d.img", os.urandom(3 * MiB) + bytes(6 * MiB) + b"ab" * MiB + os.urandom(MiB))
    else:  # a size that is not a multiple of 4 MiB, with data in the last partial chunk
        path = env.image("d.img", os.urandom(5 * MiB + 12345))
    stats = env.backup(bank, path, "checkpoints/c1/v1")
    size = path.stat().st_size
    assert stats.size == size
    assert stats.chunk_count == -(-size // CHUNK_SIZE)
    out = env.restore(bank, "checkpoints/c1/v1")
    assert out.stat().st_size == size
    assert sha(out) == sha(path)
    if kind == "zeros":
        assert stats.zero_chunks == stats.chunk_count and stats.stored_bytes == 0
        assert bank.read_index("checkpoints/c1/v1").chunks == [None, None, None]


def test_sparse_file_holes_are_not_read(env):
    bank = env.open()
    path = env.image("sparse.img", size=64 * MiB, writes=[(0, b"boot" * 1000), (44 * MiB - 100, os.urandom(MiB))])
    reader = FileBlockReader(path)
    ranges = reader.allocated_ranges()
    reader.close()
    assert ranges is not None and sum(n for _, n in ranges) < 8 * MiB
    stats = env.backup(bank, path, "checkpoints/sp/v1")
    # only the chunks holding data are read: chunk 0, and chunks 10 and 11 (the write straddles them)
    assert stats.read_bytes == 3 * CHUNK_SIZE
    assert stats.zero_chunks == 16 - 3
    out = env.restore(bank, "checkpoints/sp/v1")
    assert sha(out) == sha(path)
    # the restored file is sparse again
    assert os.stat(out).st_blocks * 512 < 16 * MiB


def test_second_backup_of_same_data_stores_nothing_new(env):
    bank = env.open()
    path = env.image("d.img", os.urandom(16 * MiB) + bytes(4 * MiB))
    first = env.backup(bank, path, "checkpoints/c1/v1")
    assert first.new_chunks == 4 and first.stored_bytes >= 16 * MiB
    second = env.backup(bank, path, "checkpoints/c2/v1")
    assert second.new_chunks == 0 and second.stored_bytes == 0
    assert second.reused_chunks == 4
    # dedup inside one volume: identical chunks are stored once
    block = os.urandom(CHUNK_SIZE)
    rep = env.image("rep.img", block * 5)
    third = env.backup(bank, rep, "checkpoints/c3/v1")
    assert third.new_chunks == 1 and third.reused_chunks == 4
    assert sha(env.restore(bank, "checkpoints/c3/v1")) == sha(rep)


def test_incremental_with_changed_ranges_reads_only_those(env):
    bank = env.open()
    data = bytearray(os.urandom(40 * MiB))
    path = env.image("d.img", bytes(data))
    env.backup(bank, path, "checkpoints/c1/v1")
    # change 3 bytes in chunk 2 and a run spanning chunks 7 and 8
    changes = [(2 * CHUNK_SIZE + 100, b"xyz"), (8 * CHUNK_SIZE - 10, os.urandom(20))]
    for off, buf in changes:
        data[off:off + len(buf)] = buf
    path = env.image("d.img", bytes(data))
    stats = env.backup(bank, path, "checkpoints/c2/v1", base_index="checkpoints/c1/v1",
                       changed_ranges=[(off, len(buf)) for off, buf in changes])
    # only the 64 KiB extents around the changes are read and stored, together in one new chunk (a pack):
    # three regions become pieces
    assert stats.read_bytes == 3 * EXTENT_ALIGN
    assert stats.new_chunks == 1 and stats.patched_regions == 3
    assert stats.new_bytes == 3 * EXTENT_ALIGN
    assert stats.reused_chunks == 7
    assert sha(env.restore(bank, "checkpoints/c2/v1")) == sha(path)
    # the first restore point is untouched
    first = env.restore(bank, "checkpoints/c1/v1", "first.img")
    assert sha(first) != sha(path)
    idx = bank.read_index("checkpoints/c2/v1")
    assert idx.base_index == "checkpoints/c1/v1"
    # without changed ranges the whole volume is re-read but nothing unchanged is stored again
    again = env.backup(bank, path, "checkpoints/c3/v1", base_index="checkpoints/c2/v1")
    assert again.read_bytes == 40 * MiB and again.new_chunks == 0


def test_incremental_volume_grew(env):
    bank = env.open()
    path = env.image("d.img", os.urandom(6 * MiB))
    env.backup(bank, path, "checkpoints/c1/v1")
    path = env.image("d.img", open(path, "rb").read() + os.urandom(3 * MiB))
    stats = env.backup(bank, path, "checkpoints/c2/v1", base_index="checkpoints/c1/v1",
                       changed_ranges=[(6 * MiB, 3 * MiB)])
    # chunk 0 comes from the base; chunk 1 changed length and chunk 2 is new: both are read
    assert stats.read_bytes == 9 * MiB - CHUNK_SIZE
    assert sha(env.restore(bank, "checkpoints/c2/v1")) == sha(path)


def test_progress_and_metadata(env):
    bank = env.open()
    path = env.image("d.img", os.urandom(10 * MiB))
    seen = []
    env.backup(bank, path, "checkpoints/p/v1", progress=lambda d, t: seen.append((d, t)),
               metadata={"volume_id": "vol-1", "server_id": "srv"})
    assert seen[-1] == (10 * MiB, 10 * MiB)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    idx = bank.read_index("checkpoints/p/v1")
    assert idx.metadata == {"volume_id": "vol-1", "server_id": "srv"}
    assert idx.size == 10 * MiB and idx.chunk_size == CHUNK_SIZE and len(idx.volume_hash) == 64


def test_indexes_list_delete_and_bad_names(env):
    bank = env.open()
    path = env.image("d.img", os.urandom(MiB))
    for name in ("checkpoints/a/v1", "checkpoints/a/v2", "checkpoints/b/v1"):
        env.backup(bank, path, name)
    assert bank.list_indexes() == ["checkpoints/a/v1", "checkpoints/a/v2", "checkpoints/b/v1"]
    assert bank.list_indexes("checkpoints/a/") == ["checkpoints/a/v1", "checkpoints/a/v2"]
    bank.delete_index("checkpoints/a/v1")
    assert bank.list_indexes() == ["checkpoints/a/v2", "checkpoints/b/v1"]
    with pytest.raises(IndexNotFound):
        bank.read_index("checkpoints/a/v1")
    with pytest.raises(IndexNotFound):
        env.backup(bank, path, "checkpoints/c/v1", base_index="checkpoints/a/v1")
    for bad in ("../x", "/abs", "a//b", "", "a/.hidden"):
        with pytest.raises(BankError):
            env.backup(bank, path, bad)
    with pytest.raises(BankError):
        env.backup(bank, path, "checkpoints/c/v1", changed_ranges=[(0, 1)])


def test_restore_without_the_database(env):
    """Only the bank (folder or bucket) survives: a fresh process restores from it alone."""
    bank = env.open(fsync=True)
    path = env.image("d.img", os.urandom(7 * MiB) + bytes(2 * MiB))
    env.backup(bank, path, "checkpoints/lost/vb")
    bank.close()
    fresh = env.open()  # no database anywhere: only the bank settings
    assert fresh.list_indexes() == ["checkpoints/lost/vb"]
    assert sha(env.restore(fresh, "checkpoints/lost/vb")) == sha(path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.tuples(st.sampled_from(["zero", "rand", "same"]), st.integers(1, 3 * MiB)),
                       min_size=1, max_size=5))
def test_round_trip_property_local(tmp_path_factory, pieces):
    from bank_helpers import BankEnv

    e = BankEnv("local", tmp_path_factory.mktemp("prop"))
    bank = e.open()
    parts = []
    for kind, n in pieces:
        parts.append(bytes(n) if kind == "zero" else os.urandom(n) if kind == "rand" else b"\x07" * n)
    path = e.image("d.img", b"".join(parts))
    e.backup(bank, path, "checkpoints/p/v")
    assert sha(e.restore(bank, "checkpoints/p/v")) == sha(path)
    e.close()


def test_s3_server_refuses_a_wrong_secret(tmp_path):
    """The S3 test server checks signatures: the bank cannot be opened with a wrong secret."""
    from bank_helpers import S3_ENDPOINT, s3_bank_settings
    from conftest import require_component

    from opencsbs.bank import BankConfigError, open_bank
    from opencsbs.config import Settings

    require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start")
    good = s3_bank_settings()
    bank = open_bank(Settings(data_dir=tmp_path, bank=good))
    bank.close()
    bad = good.model_copy(update={"s3_secret_key": good.s3_secret_key + "x"})
    with pytest.raises(BankConfigError) as info:
        open_bank(Settings(data_dir=tmp_path, bank=bad))
    assert "SignatureDoesNotMatch" in str(info.value) or "403" in str(info.value) or "Forbidden" in str(info.value)


def test_a_backend_missing_a_method_is_refused_when_built():
    """``ObjectStore`` is abstract: a backend that forgets one of its methods fails when it is built, not in
    the middle of a backup."""
    from opencsbs.bank import ObjectStore

    class NoTouch(ObjectStore):
        def put(self, key, data, sync=True): ...
        def get(self, key): ...
        def head(self, key): ...
        def delete(self, key): ...
        def list(self, prefix): ...

    with pytest.raises(TypeError, match="touch"):
        NoTouch()


#: run in a child process: a deadlocked pool thread would otherwise keep the test session from ever exiting
_CLOSE_WHILE_FAILING_OVER = """
import sys, threading, time
from opencsbs.bank import Bank, Codec, LocalStore
bank = Bank(LocalStore(sys.argv[1]), Codec(None, level=1), threads=2)
started, go = threading.Event(), threading.Event()
def read_failing_over():
    started.set()
    go.wait(10)
    return bank._from_fallback("00" * 32, 10)  # no replica holds it: None
future = bank.executor().submit(read_failing_over)
assert started.wait(10)
closer = threading.Thread(target=bank.close, daemon=True)
closer.start()
time.sleep(0.2)  # close() is now waiting for the pool
go.set()
closer.join(10)
if closer.is_alive():
    print("close() deadlocked with a read failing over to a replica", flush=True)
    import os; os._exit(3)
assert future.result(timeout=1) is None
print("closed", flush=True)
"""


def test_close_does_not_deadlock_with_a_read_failing_over_to_a_replica(tmp_path):
    """A chunk read still running in the bank's pool when the bank is closed (a restore pre-check that raised
    on a missing chunk while its other reads were in flight) may fail over to a replica, which takes the bank's
    pool lock: close() must not hold that lock while it waits for the pool (it once did, and hung)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _CLOSE_WHILE_FAILING_OVER, str(tmp_path / "bank")],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "closed"), done.stdout + done.stderr[-2000:]
