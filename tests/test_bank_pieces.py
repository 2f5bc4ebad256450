"""Incrementals that store only what changed (docs/bank.md, "Pieces"): an index entry may be pieces, slices of
chunks; every index stays a complete restore point; GC, verify, replication and drills understand pieces; banks
written in bank format 1 stay readable (the committed samples under tests/data/bank-format1)."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
from pathlib import Path

import pytest
from bank_helpers import MiB, env, sha  # noqa: F401 - env is a fixture
from sample_volume import sample_volume

from opencsbs.bank import CHUNK_SIZE, Bank, Codec, LocalStore
from opencsbs.bank.errors import ChunkMissing
from opencsbs.bank.layout import EXTENT_ALIGN, MAX_PIECE_CHUNKS, chunk_key
from opencsbs.bank.replicate import copy_index
from opencsbs.bank.verify import compare_restored

DATA = Path(__file__).parent / "data" / "bank-format1"


class _Bytes:
    """A volume in memory (a BlockReader)."""

    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def read(self, off: int, n: int) -> bytes:
        return self.data[off:off + n]

    def allocated_ranges(self):
        return None


class _Sink:
    """A restore target in memory (a BlockWriter)."""

    def __init__(self, size: int):
        self.buf, self.size = bytearray(size), size

    def write(self, off: int, data: bytes) -> None:
        self.buf[off:off + len(data)] = data

    def write_zeroes(self, off: int, n: int) -> None:
        self.buf[off:off + n] = bytes(n)

    def flush(self) -> None:
        pass


def _restore(bank: Bank, name: str) -> bytes:
    sink = _Sink(bank.read_index(name).size)
    bank.restore_volume(name, sink)
    return bytes(sink.buf)


def _scatter(data: bytearray, rnd: random.Random, fraction: float) -> list[tuple[int, int]]:
    """Rewrite ``fraction`` of ``data`` in 64 KiB writes at random aligned offsets; the ranges written."""
    slots = len(data) // EXTENT_ALIGN
    ranges = []
    for slot in rnd.sample(range(slots), max(1, int(slots * fraction))):
        off = slot * EXTENT_ALIGN
        data[off:off + EXTENT_ALIGN] = os.urandom(EXTENT_ALIGN)
        ranges.append((off, EXTENT_ALIGN))
    return ranges


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_a_bank_written_in_format_1_stays_readable_and_takes_pieces(tmp_path, kind):
    path = tmp_path / kind
    shutil.copytree(DATA / kind, path)
    key = bytes(range(32)) if kind == "encrypted" else None
    full, changed, ranges = sample_volume()
    with Bank(LocalStore(str(path)), Codec(key)) as bank:
        assert _restore(bank, "checkpoints/full/v") == full
        assert _restore(bank, "checkpoints/incr/v") == changed
        assert bank.verify().ok
        # reading changes nothing: an older opencsbs can still open the bank
        assert json.loads((path / "bank.json").read_text())["format"] == 1
        # an incremental on top of a format-1 index stores pieces and raises the bank to format 2
        newer = bytearray(changed)
        newer[2 * MiB:2 * MiB + EXTENT_ALIGN] = os.urandom(EXTENT_ALIGN)
        stats = bank.backup_volume(_Bytes(bytes(newer)), "checkpoints/next/v", base_index="checkpoints/incr/v",
                                   changed_ranges=[(2 * MiB, EXTENT_ALIGN)])
        assert stats.patched_regions == 1 and stats.read_bytes == EXTENT_ALIGN
        assert json.loads((path / "bank.json").read_text())["format"] == 2
        assert _restore(bank, "checkpoints/next/v") == bytes(newer)
        assert _restore(bank, "checkpoints/full/v") == full
    with Bank(LocalStore(str(path)), Codec(key)) as again:
        assert again.verify().ok and _restore(again, "checkpoints/next/v") == bytes(newer)


def test_scattered_changes_store_and_read_little_and_every_backup_restores_alone(env):
    bank = env.open()
    rnd = random.Random(7)
    data = bytearray(os.urandom(64 * MiB))
    versions = {"checkpoints/c0/v": bytes(data)}
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/c0/v")
    base = "checkpoints/c0/v"
    for n in range(1, 5):
        ranges = _scatter(data, rnd, 0.01)
        changed = sum(length for _off, length in ranges)
        name = f"checkpoints/c{n}/v"
        stats = bank.backup_volume(_Bytes(bytes(data)), name, base_index=base, changed_ranges=ranges)
        # random data does not compress: what is stored and read is what changed (plus envelope headers)
        assert stats.read_bytes == changed
        assert stats.stored_bytes <= 1.05 * changed
        versions[name] = bytes(data)
        base = name
    # each backup restores on its own, also when the others are deleted and garbage collected
    for name in ("checkpoints/c1/v", "checkpoints/c3/v", "checkpoints/c0/v"):
        bank.delete_index(name)
        del versions[name]
        report = bank.gc(grace_seconds=0)
        assert not report.errors
        for left, content in versions.items():
            assert _restore(bank, left) == content
    assert bank.verify().ok


def test_a_region_changed_again_and_again_is_rolled_into_one_chunk(env):
    bank = env.open()
    data = bytearray(os.urandom(2 * CHUNK_SIZE))
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/r0/v")
    base = "checkpoints/r0/v"
    for n in range(1, 2 * MAX_PIECE_CHUNKS):
        off = (2 * n) * EXTENT_ALIGN
        data[off:off + EXTENT_ALIGN] = os.urandom(EXTENT_ALIGN)
        name = f"checkpoints/r{n}/v"
        bank.backup_volume(_Bytes(bytes(data)), name, base_index=base, changed_ranges=[(off, EXTENT_ALIGN)])
        idx = bank.read_index(name)
        entry = idx.chunks[0]
        if isinstance(entry, list):
            assert len({p[0] for p in entry if p[0]}) <= MAX_PIECE_CHUNKS
        assert _restore(bank, name) == bytes(data)
        base = name
    # the region went back to whole chunks at least once (a restore fetches a bounded number of chunks)
    kinds = {type(bank.read_index(f"checkpoints/r{n}/v").chunks[0]) for n in range(1, 2 * MAX_PIECE_CHUNKS)}
    assert kinds == {str, list}


def test_a_half_rewritten_region_is_stored_whole(env):
    bank = env.open()
    data = bytearray(os.urandom(CHUNK_SIZE))
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/h0/v")
    data[:3 * MiB] = os.urandom(3 * MiB)
    stats = bank.backup_volume(_Bytes(bytes(data)), "checkpoints/h1/v", base_index="checkpoints/h0/v",
                               changed_ranges=[(0, 3 * MiB)])
    assert stats.patched_regions == 0 and stats.read_bytes == CHUNK_SIZE
    assert isinstance(bank.read_index("checkpoints/h1/v").chunks[0], str)


def test_re_reading_keeps_unchanged_pieces_of_the_base(env):
    bank = env.open()
    data = bytearray(os.urandom(3 * CHUNK_SIZE))
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/a/v")
    data[MiB:MiB + EXTENT_ALIGN] = bytes(EXTENT_ALIGN)  # zeros inside a region: a zero piece
    data[5 * MiB:5 * MiB + EXTENT_ALIGN] = os.urandom(EXTENT_ALIGN)
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/b/v", base_index="checkpoints/a/v",
                       changed_ranges=[(MiB, EXTENT_ALIGN), (5 * MiB, EXTENT_ALIGN)])
    idx = bank.read_index("checkpoints/b/v")
    assert any(p[0] is None for p in idx.chunks[0]) and isinstance(idx.chunks[1], list)
    again = bank.backup_volume(_Bytes(bytes(data)), "checkpoints/c/v", base_index="checkpoints/b/v")
    assert again.new_chunks == 0 and again.read_bytes == 3 * CHUNK_SIZE
    assert bank.read_index("checkpoints/c/v").chunks == idx.chunks
    assert _restore(bank, "checkpoints/c/v") == bytes(data)


def _pieces_pair(tmp_path: Path, key: bytes | None = None):
    bank = Bank(LocalStore(str(tmp_path / "bank")), Codec(key))
    data = bytearray(os.urandom(3 * CHUNK_SIZE + 12345))
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/p0/v")
    ranges = [(CHUNK_SIZE + 2 * EXTENT_ALIGN, EXTENT_ALIGN), (3 * CHUNK_SIZE, 12345)]
    for off, n in ranges:
        data[off:off + n] = os.urandom(n)
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/p1/v", base_index="checkpoints/p0/v",
                       changed_ranges=ranges)
    return bank, bytes(data)


def test_verify_and_restore_check_name_the_backups_whose_pieces_are_gone(tmp_path):
    bank, data = _pieces_pair(tmp_path)
    with bank:
        idx = bank.read_index("checkpoints/p1/v")
        sliced = idx.chunks[1][0][0]  # the base chunk region 1 takes slices of
        assert sliced == bank.read_index("checkpoints/p0/v").chunks[1]
        pack = next(p[0] for p in idx.chunks[1] if p[0] != sliced)
        # GC keeps a chunk that only slices reference
        bank.delete_index("checkpoints/p0/v")
        bank.gc(grace_seconds=0)
        assert _restore(bank, "checkpoints/p1/v") == data
        assert bank.check_volume("checkpoints/p1/v") == len(idx.addresses())
        # a damaged pack chunk is found and the index that uses it named
        key = tmp_path / "bank" / chunk_key(pack)
        blob = bytearray(key.read_bytes())
        blob[-1] ^= 1
        key.write_bytes(bytes(blob))
        report = bank.verify()
        assert report.affected_indexes() == ["checkpoints/p1/v"]
        # a missing sliced chunk stops the restore pre-check
        (tmp_path / "bank" / chunk_key(sliced)).unlink()
        with pytest.raises(ChunkMissing):
            bank.check_volume("checkpoints/p1/v")


def test_drill_comparison_understands_pieces(tmp_path):
    bank, data = _pieces_pair(tmp_path)
    with bank:
        idx = bank.read_index("checkpoints/p1/v")
        assert compare_restored(bank, idx, lambda off, n: data[off:off + n]) == []
        altered = bytearray(data)
        altered[CHUNK_SIZE + 10] ^= 1
        assert compare_restored(bank, idx, lambda off, n: bytes(altered[off:off + n])) == [1]


@pytest.mark.parametrize("target_key", [None, bytes(range(1, 33))], ids=["same-addressing", "own-key"])
def test_replication_copies_every_chunk_pieces_need(tmp_path, target_key):
    bank, data = _pieces_pair(tmp_path)
    with bank, Bank(LocalStore(str(tmp_path / "replica")), Codec(target_key)) as replica:
        stats = copy_index(bank, replica, "checkpoints/p1/v")
        assert stats.sent_chunks == len(bank.read_index("checkpoints/p1/v").addresses())
        assert _restore(replica, "checkpoints/p1/v") == data
        assert replica.verify().ok
        assert json.loads((tmp_path / "replica" / "bank.json").read_text())["format"] == 2


class _Gated(_Bytes):
    """Stops before read number ``gate`` until ``go`` is set (a backup in flight)."""

    def __init__(self, data: bytes, gate: int):
        super().__init__(data)
        self.gate, self.reads = gate, 0
        self.waiting, self.go = threading.Event(), threading.Event()

    def read(self, off: int, n: int) -> bytes:
        if self.reads == self.gate:
            self.waiting.set()
            assert self.go.wait(60)
        self.reads += 1
        return super().read(off, n)


def test_a_backup_whose_sliced_chunk_vanished_during_a_gc_stores_that_region_whole(env):
    bank = env.open()
    data = bytearray(os.urandom(3 * CHUNK_SIZE))
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/a/v")
    ranges = [(EXTENT_ALIGN, EXTENT_ALIGN), (2 * CHUNK_SIZE, EXTENT_ALIGN)]
    for off, n in ranges:
        data[off:off + n] = os.urandom(n)
    reader = _Gated(bytes(data), gate=1)
    result = {}

    def run():
        try:
            result["stats"] = bank.backup_volume(reader, "checkpoints/b/v", base_index="checkpoints/a/v",
                                                 changed_ranges=ranges)
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert reader.waiting.wait(60)
    bank.gc(grace_seconds=0)
    # the base chunk region 0 takes slices of disappears behind the backup's back (lost, or a GC race)
    sliced = bank.read_index("checkpoints/a/v").chunks[0]
    bank.store.delete(chunk_key(sliced))
    reader.go.set()
    t.join(60)
    assert "error" not in result, result
    assert result["stats"].rewritten_chunks == 1
    idx = bank.read_index("checkpoints/b/v")
    assert isinstance(idx.chunks[0], str) and isinstance(idx.chunks[2], list)
    assert sliced not in idx.addresses()
    assert _restore(bank, "checkpoints/b/v") == bytes(data)


def test_re_reading_without_changed_ranges_stores_only_the_differing_extents(env):
    bank = env.open()
    data = bytearray(os.urandom(4 * CHUNK_SIZE))
    data[2 * CHUNK_SIZE:] = bytes(2 * CHUNK_SIZE)
    other = os.urandom(CHUNK_SIZE)
    bank.backup_volume(_Bytes(other), "checkpoints/other/v")
    bank.backup_volume(_Bytes(bytes(data)), "checkpoints/a/v")
    data[EXTENT_ALIGN + 5] ^= 1  # one byte of a whole chunk
    data[3 * CHUNK_SIZE + EXTENT_ALIGN:3 * CHUNK_SIZE + 2 * EXTENT_ALIGN] = os.urandom(EXTENT_ALIGN)  # in zeros
    data[CHUNK_SIZE:2 * CHUNK_SIZE] = other  # a region another backup holds whole: dedup, nothing stored
    stats = bank.backup_volume(_Bytes(bytes(data)), "checkpoints/b/v", base_index="checkpoints/a/v")
    assert stats.read_bytes == 4 * CHUNK_SIZE
    assert stats.patched_regions == 2 and stats.new_bytes == 2 * EXTENT_ALIGN
    idx = bank.read_index("checkpoints/b/v")
    assert isinstance(idx.chunks[0], list) and isinstance(idx.chunks[3], list) and idx.chunks[2] is None
    assert idx.chunks[1] == bank.read_index("checkpoints/other/v").chunks[0]
    assert _restore(bank, "checkpoints/b/v") == bytes(data)
