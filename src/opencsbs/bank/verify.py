"""Verification of the bank: re-read every index and every chunk, decrypt, decompress and check each against
its address and each index's volume hash; report what is damaged or missing (restic's ``check --read-data``,
borg's ``check --verify-data``).

>>> report = verify_bank(bank)
>>> report.ok, report.damaged_chunks, report.missing_chunks
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opencsbs.bank.errors import ChunkDamaged, IndexNotFound, ObjectNotFound
from opencsbs.bank.layout import ADDR_RE, chunk_key, utcnow_iso

log = logging.getLogger("opencsbs.bank")

if TYPE_CHECKING:
    from opencsbs.bank.bank import Bank

Progress = Callable[[int, int], None]


@dataclass
class VerifyReport:
    """What ``verify`` found. ``damaged_*``: ``(name, reason)``; ``missing_chunks``: ``(address, index names)``."""

    indexes_checked: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    unreferenced_chunks: int = 0
    damaged_indexes: list[tuple[str, str]] = field(default_factory=list)
    damaged_chunks: list[tuple[str, str]] = field(default_factory=list)
    missing_chunks: list[tuple[str, list[str]]] = field(default_factory=list)
    #: chunk key → the index names that reference it, for every damaged chunk an index references
    damaged_chunk_indexes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def affected_indexes(self) -> list[str]:
        """Every index that needs a damaged or missing chunk, or is itself damaged (sorted)."""
        names = {name for name, _ in self.damaged_indexes}
        for _addr, users in self.missing_chunks:
            names.update(users)
        for users in self.damaged_chunk_indexes.values():
            names.update(users)
        return sorted(names)

    @property
    def ok(self) -> bool:
        return not (self.damaged_indexes or self.damaged_chunks or self.missing_chunks)


def verify_bank(bank: Bank, progress: Progress | None = None) -> VerifyReport:
    """Re-read every index and every chunk: decrypt, decompress and check each chunk against its address,
    each index's ``volume_hash`` against its chunk list; report damaged and missing objects.
    ``progress(chunks_done, chunks_total)``. Never raises for damage (only for backend failures)."""
    started = time.monotonic()
    report = VerifyReport()
    referenced: dict[str, list[str]] = {}
    for name in bank.list_indexes():
        try:
            idx = bank.read_index(name)
        except (ChunkDamaged, IndexNotFound) as exc:
            report.damaged_indexes.append((name, getattr(exc, "reason", str(exc))))
            continue
        report.indexes_checked += 1
        for addr in idx.chunk_lengths():
            referenced.setdefault(addr, []).append(name)
        if bank.volume_hash(idx) != idx.volume_hash:
            report.damaged_indexes.append((name, "volume hash does not match the chunk list"))
    present = [info for info in bank.store.list("chunks/")]
    present_addrs = {info.key.rsplit("/", 1)[-1] for info in present}
    for addr in sorted(set(referenced) - present_addrs):
        report.missing_chunks.append((addr, sorted(set(referenced[addr]))))
    report.unreferenced_chunks = len(present_addrs - set(referenced))

    def check(key: str) -> tuple[str, int, str | None]:
        addr = key.rsplit("/", 1)[-1]
        if not ADDR_RE.match(addr) or key != chunk_key(addr):
            return key, 0, "not a chunk name"
        try:
            data = bank.codec.decode_chunk(bytes.fromhex(addr), bank.store.get(key), None, name=key)
        except ObjectNotFound:
            return key, 0, "vanished while verifying"
        except ChunkDamaged as exc:
            return key, 0, exc.reason
        return key, len(data), None

    pool = bank.executor()
    total = len(present)
    window: deque[Future] = deque()

    def settle(fut: Future) -> None:
        key, n, problem = fut.result()
        report.chunks_checked += 1
        report.bytes_checked += n
        if problem == "vanished while verifying":
            addr = key.rsplit("/", 1)[-1]
            if addr in referenced:
                report.missing_chunks.append((addr, sorted(set(referenced[addr]))))
        elif problem is not None:
            report.damaged_chunks.append((key, problem))
            addr = key.rsplit("/", 1)[-1]
            if addr in referenced:
                report.damaged_chunk_indexes[key] = sorted(set(referenced[addr]))
        if progress is not None:
            progress(report.chunks_checked, total)

    for info in present:
        window.append(pool.submit(check, info.key))
        while len(window) > bank.workers * 2:
            settle(window.popleft())
    while window:
        settle(window.popleft())
    report.seconds = time.monotonic() - started
    _record(bank, report)
    return report


#: the record of the last whole-bank verify (``bank.layout.read_record`` reads it back)
FINISHED_KEY = "verify/finished"
#: most affected index names kept in the record
RECORD_AFFECTED = 100


def _record(bank: Bank, report: VerifyReport) -> None:
    """Write :data:`FINISHED_KEY`: when the verify ended and its figures (``ok``, counts, bytes, seconds, the first
    affected index names); a bank that refuses the write (read-only) keeps no record."""
    doc = {"finished_at": utcnow_iso(), "ok": report.ok, "indexes_checked": report.indexes_checked,
           "chunks_checked": report.chunks_checked, "bytes_checked": report.bytes_checked,
           "damaged_indexes": len(report.damaged_indexes), "damaged_chunks": len(report.damaged_chunks),
           "missing_chunks": len(report.missing_chunks), "unreferenced_chunks": report.unreferenced_chunks,
           "affected_indexes": report.affected_indexes()[:RECORD_AFFECTED], "seconds": round(report.seconds, 3)}
    try:
        bank.store.put(FINISHED_KEY, json.dumps(doc).encode(), sync=False)
    except Exception:  # noqa: BLE001 - the verify's result stands without its record
        log.warning("bank verify: its record %s could not be written", FINISHED_KEY, exc_info=True)


@dataclass
class ChunkVerdict:
    """What re-reading one chunk found: ``problem`` None (sound), ``"damaged"`` or ``"missing"``; ``size`` the
    plaintext bytes read."""

    address: str
    problem: str | None
    reason: str = ""
    size: int = 0


def check_chunks(bank: Bank, lengths: dict[str, int], progress: Progress | None = None,
                 abort: Callable[[], None] | None = None) -> dict[str, ChunkVerdict]:
    """Re-read, decrypt, decompress and re-hash each chunk of ``lengths`` (address → expected plaintext length);
    ``progress(done, total)``; ``abort()`` is called between chunks and may raise to stop. Never raises for
    damage (only for backend failures): a missing chunk reads ``missing``, a chunk that fails its address or
    length ``damaged``."""

    def check(addr: str, length: int) -> ChunkVerdict:
        key = chunk_key(addr)
        try:
            data = bank.codec.decode_chunk(bytes.fromhex(addr), bank.store.get(key), length, name=key)
        except ObjectNotFound:
            return ChunkVerdict(addr, "missing", "chunk not found")
        except ChunkDamaged as exc:
            return ChunkVerdict(addr, "damaged", exc.reason)
        return ChunkVerdict(addr, None, "", len(data))

    out: dict[str, ChunkVerdict] = {}
    pool = bank.executor()
    window: deque[Future] = deque()
    total = len(lengths)

    def settle(fut: Future) -> None:
        verdict = fut.result()
        out[verdict.address] = verdict
        if progress is not None:
            progress(len(out), total)

    try:
        for addr, length in lengths.items():
            if abort is not None:
                abort()
            window.append(pool.submit(check, addr, length))
            while len(window) > bank.workers * 2:
                settle(window.popleft())
        while window:
            settle(window.popleft())
    except BaseException:
        for fut in window:
            fut.cancel()
        raise
    return out


def index_chunk_lengths(idx) -> dict[str, int]:
    """Address → plaintext length of each chunk the index ``idx`` (a ``VolumeIndex``) references, whole or in
    pieces."""
    return idx.chunk_lengths()


def compare_restored(bank: Bank, idx, read: Callable[[int, int], bytes]) -> list[int]:
    """Compare a restored copy of the volume of index ``idx`` with what the index records: re-hash each region
    read back by ``read(offset, length)`` and compare with its address (a zero region with the digest of its
    zeros; a region made of pieces with its bytes assembled from the bank's chunks, each checked against its
    address), then the whole volume with ``volume_hash``. Returns the numbers of the regions that differ (a
    volume hash mismatch with every region matching, i.e. an index that contradicts itself, returns ``[-1]``).
    Raises :class:`~opencsbs.bank.errors.ChunkMissing` / :class:`ChunkDamaged` for a chunk of a region made of
    pieces that cannot be read."""
    bad: list[int] = []
    for i, entry in enumerate(idx.chunks):
        length = idx.chunk_length(i)
        got = read(i * idx.chunk_size, length)
        if isinstance(entry, list):
            if got != bank.read_entry(entry, length):
                bad.append(i)
            continue
        expected = bytes.fromhex(entry) if entry else bank.zero_digest(length)
        if bank.codec.digest(got) != expected:
            bad.append(i)
    if not bad and bank.volume_hash(idx) != idx.volume_hash:
        bad.append(-1)
    return bad
