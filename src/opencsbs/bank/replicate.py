"""Bank-to-bank copies (docs/replication.md): :func:`copy_index` copies one volume backup (an index and the chunks
it references) from a source bank to a target bank.

- Only the chunks the target lacks are sent: when both banks address chunks alike (same hash and key: same
  ``key_id``), the chunks of the backup's base index already on the target (an incremental's previous copy)
  are known present without a request, as a backup trusts its base; the target is asked (``head``) for the
  others before the source chunk is even read; otherwise every source chunk is read and decoded, its target
  address computed with the target's key, and only absent ones are stored (re-encoded with the target's key).
- Every chunk is verified on arrival: decoded with the source's codec, its hash checked against its address
  (:meth:`~opencsbs.bank.codec.Codec.decode_chunk`); the rebuilt volume hash must match the source's.
- Memory stays bounded: at most ``2 × workers`` chunks are in flight.
- The target's index is written last, after the new chunks are durable: a backup appears on the target only once
  all its chunks are there. An interrupted copy leaves chunks only; run again, it sends only what is still
  missing (the look-ups find the rest), so a copy is resumable and idempotent.
- The copy holds a lease on the target (``leases/<id>.json``) like a backup in flight, renews old chunks it reuses
  and re-checks them when a garbage collection overlapped it, so the target's GC never removes what it needs
  (docs/bank.md).

>>> stats = copy_index(primary, replica, "checkpoints/<id>/<volume_backup_id>")
>>> stats.sent_chunks, stats.sent_bytes
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from opencsbs.bank.bank import GC_WAIT_SECONDS, Bank
from opencsbs.bank.errors import BankError, ChunkDamaged, ChunkMissing, IndexNotFound, ObjectNotFound
from opencsbs.bank.gc import gc_before_lease_running, gc_overlapped
from opencsbs.bank.layout import TOUCH_AGE, VolumeIndex, chunk_key, index_key, utcnow_iso


@dataclass
class CopyStats:
    """Figures of one index copy. ``sent_chunks``/``sent_bytes``: chunks stored on the target and their stored
    bytes; ``present_chunks``: distinct chunks the target already had; ``read_bytes``: stored bytes read from the
    source; ``size``: the volume's size; ``skipped``: the target already held this index (nothing done)."""

    index: str
    size: int = 0
    chunk_count: int = 0
    sent_chunks: int = 0
    sent_bytes: int = 0
    present_chunks: int = 0
    read_bytes: int = 0
    seconds: float = 0.0
    skipped: bool = False


def same_addressing(source: Bank, target: Bank) -> bool:
    """Whether both banks give a chunk the same address (same hash, same key, same chunk size)."""
    return (source.codec.key_id == target.codec.key_id and source.codec.hash_name == target.codec.hash_name
            and source.chunk_size == target.chunk_size)


def copy_index(source: Bank, target: Bank, index_name: str,
               progress: Callable[[int, int], None] | None = None) -> CopyStats:
    """Copy the index ``index_name`` and its chunks from ``source`` to ``target`` (see the module doc).

    ``progress(chunks_done, chunks_total)`` is called from this thread (it may raise to abort the copy; what was
    sent stays and a later call resumes). An index already on the target with the same size and chunk count is
    left alone (``skipped``). Raises :class:`IndexNotFound` (no such index on the source),
    :class:`~opencsbs.bank.errors.ChunkMissing` / :class:`ChunkDamaged` (a source chunk absent or failing
    verification), :class:`BankError`.
    """
    started = time.monotonic()
    idx = source.read_index(index_name)
    stats = CopyStats(index=index_name, size=idx.size, chunk_count=idx.chunk_count)
    try:
        have = target.read_index(index_name)
        if have.size == idx.size and have.chunk_count == idx.chunk_count:
            stats.skipped = True
            stats.seconds = time.monotonic() - started
            return stats
    except (IndexNotFound, ChunkDamaged):
        pass
    same = same_addressing(source, target)
    known: set[str] = set()  # on the target for sure: referenced by the base's copy (GC overlap checked below)
    if same and idx.base_index:
        try:
            known = target.read_index(idx.base_index).addresses()
        except (IndexNotFound, ChunkDamaged):
            pass
    length_of = idx.chunk_lengths()  # every chunk referenced, whole or in pieces, in order of first use
    order = list(length_of)
    # the lease names the base whose chunks are trusted: the target's GC keeps them (or sweeps nothing if it vanished)
    lease_key, lease_time = target._open_lease(index_name, idx.base_index if known else None)
    mapped: dict[str, str] = {}  # source address -> target address
    new_keys: list[str] = []
    pool = target.executor()
    window: deque[Future] = deque()
    limit = target.workers * 2
    total = len(order)
    done = 0

    def one(addr: str, force: bool = False) -> tuple[str, int, int, bool]:
        """Make sure the chunk ``addr`` is on the target: ``(target address, sent bytes, read bytes, sent)``."""
        if same and not force:
            if addr in known:
                return addr, 0, 0, False
            key = chunk_key(addr)
            info = target.store.head(key)
            if info is not None:
                if info.mtime < lease_time - TOUCH_AGE:
                    try:
                        target.store.touch(key)  # renewed: a concurrent GC's cutoff keeps it
                        return addr, 0, 0, False
                    except ObjectNotFound:
                        pass
                else:
                    return addr, 0, 0, False
        key = chunk_key(addr)
        try:
            blob = source.store.get(key)
        except ObjectNotFound:
            raise ChunkMissing(key) from None
        data = source.codec.decode_chunk(bytes.fromhex(addr), blob, length_of[addr], name=key)
        if same:
            tdigest, tblob = bytes.fromhex(addr), blob  # verified above; the target reads it with the same key
        else:
            tdigest = target.codec.digest(data)
            tkey = chunk_key(tdigest.hex())
            info = target.store.head(tkey)
            if info is not None and not force:
                if info.mtime >= lease_time - TOUCH_AGE:
                    return tdigest.hex(), 0, len(blob), False
                try:
                    target.store.touch(tkey)
                    return tdigest.hex(), 0, len(blob), False
                except ObjectNotFound:
                    pass
            tblob = target.codec.encode_chunk(tdigest, data)
        target.store.put(chunk_key(tdigest.hex()), tblob, sync=False)
        return tdigest.hex(), len(tblob), len(blob), True

    def settle(addr: str, fut: Future) -> None:
        nonlocal done
        taddr, sent, read, was_sent = fut.result()
        mapped[addr] = taddr
        stats.read_bytes += read
        if was_sent:
            stats.sent_chunks += 1
            stats.sent_bytes += sent
            new_keys.append(chunk_key(taddr))
        else:
            stats.present_chunks += 1
        done += 1
        if progress is not None:
            progress(done, total)

    pending: deque[tuple[str, Future]] = deque()
    try:
        for addr in order:
            pending.append((addr, pool.submit(one, addr)))
            while len(pending) > limit:
                settle(*pending.popleft())
        while pending:
            settle(*pending.popleft())
        # a GC of the target that overlapped the copy may have removed a chunk found present: check again
        while gc_overlapped(target.store, lease_time):
            older_running = gc_before_lease_running(target.store, lease_time)
            for addr in order:
                if target.store.head(chunk_key(mapped[addr])) is None:
                    taddr, sent, read, _ = one(addr, force=True)
                    stats.sent_chunks += 1
                    stats.sent_bytes += sent
                    stats.read_bytes += read
                    new_keys.append(chunk_key(taddr))
            if not older_running:
                break
            time.sleep(GC_WAIT_SECONDS)
        step = max(1, -(-len(new_keys) // target.workers))
        for fut in [pool.submit(target.store.sync, new_keys[i:i + step]) for i in range(0, len(new_keys), step)]:
            fut.result()
        if same:
            chunks, volume_hash = list(idx.chunks), idx.volume_hash
        else:
            chunks = []
            for entry in idx.chunks:
                if isinstance(entry, str):
                    chunks.append(mapped[entry])
                elif entry:
                    chunks.append([[mapped[a] if a else None, off, n, whole] for a, off, n, whole in entry])
                else:
                    chunks.append(None)
            volume_hash = ""
        metadata = dict(idx.metadata)
        metadata["copied_from"] = {"location_kind": "bank", "index_created_at": idx.created_at,
                                   "copied_at": utcnow_iso()}
        out = VolumeIndex(name=index_name, size=idx.size, chunk_size=idx.chunk_size, chunks=chunks,
                          volume_hash=volume_hash, hash=target.codec.hash_name, created_at=idx.created_at,
                          base_index=idx.base_index, metadata=metadata, stats=dict(idx.stats))
        if not same:
            out.volume_hash = target.volume_hash(out)
        if out.has_pieces:
            target.require_pieces_format()
        target.store.put(index_key(index_name), target.codec.encode_index(index_name, out.to_json()))
    except BaseException:
        for _addr, fut in pending:
            fut.cancel()
        for _addr, fut in pending:
            if not fut.cancelled():
                try:
                    fut.result()
                except BaseException:  # noqa: BLE001 - the first error is the one raised
                    pass
        raise
    finally:
        try:
            target.store.delete(lease_key)
        except Exception:  # noqa: BLE001 - a left lease only delays GC; it expires
            pass
    stats.seconds = time.monotonic() - started
    return stats


__all__ = ["BankError", "CopyStats", "copy_index", "same_addressing"]
