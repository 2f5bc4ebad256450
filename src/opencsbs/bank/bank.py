"""The bank's face: :class:`Bank` opens a bank on an :class:`~opencsbs.bank.backends.ObjectStore`, backs a
volume up into content-addressed chunks plus one index, and restores an index onto a writer (see
``docs/bank.md``). The object layout is in :mod:`opencsbs.bank.layout`, garbage collection in
:mod:`opencsbs.bank.gc`, verification in :mod:`opencsbs.bank.verify`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from opencsbs.bank.backends import ObjectStore
from opencsbs.bank.codec import Codec
from opencsbs.bank.errors import (
    BankError,
    BankKeyError,
    ChunkDamaged,
    ChunkMissing,
    IndexNotFound,
    ObjectNotFound,
)
from opencsbs.bank.gc import GCReport, collect_garbage, gc_before_lease_running, gc_overlapped
from opencsbs.bank.layout import (
    BANK_FORMAT,
    CHUNK_SIZE,
    EXTENT_ALIGN,
    MAX_PIECE_CHUNKS,
    MAX_PIECES,
    PACK_SIZE,
    TOUCH_AGE,
    Piece,
    VolumeIndex,
    check_index_name,
    chunk_key,
    index_key,
    overlay_pieces,
    pieces_digest_input,
    region_extents,
    utcnow_iso,
)
from opencsbs.bank.verify import VerifyReport, verify_bank
from opencsbs.blockio.direct import tune_malloc
from opencsbs.core.blocks import BlockReader, BlockWriter, Range

#: how often (seconds) a finishing backup looks again while an older GC still runs
GC_WAIT_SECONDS = 0.2

_ZERO = bytes(CHUNK_SIZE)

Progress = Callable[[int, int], None]



@dataclass
class IndexStats:
    """Figures of one volume backup. Sizes in bytes, ``seconds`` wall time.

    ``stored_bytes``: bytes newly written to the bank (after compression/encryption); ``read_bytes``: bytes read
    from the volume; ``new_chunks``: chunks stored by this backup; ``reused_chunks``: non-zero chunks already in
    the bank (dedup, or taken from the base index without reading)."""

    size: int
    chunk_count: int
    zero_chunks: int
    new_chunks: int
    stored_bytes: int
    read_bytes: int
    seconds: float
    reused_chunks: int = 0
    #: plaintext bytes of the new chunks (``stored_bytes`` before compression)
    new_bytes: int = 0
    #: reused chunks a garbage collection removed during the backup, written again from the volume
    rewritten_chunks: int = 0
    #: regions stored as pieces: only their changed extents were read and stored (docs/bank.md)
    patched_regions: int = 0


@dataclass
class RestoreStats:
    """Figures of one restore: ``written_bytes`` of data written, ``zero_bytes`` left/punched as zeros."""

    size: int
    written_bytes: int
    zero_bytes: int
    seconds: float



def _chunk_bitmap(ranges: Iterable[Range], n: int, chunk_size: int, size: int) -> bytearray:
    """1 for every chunk that overlaps one of ``ranges``."""
    bits = bytearray(n)
    for off, length in ranges:
        if length <= 0 or off >= size:
            continue
        if off < 0:
            length += off
            off = 0
        end = min(size, off + length)
        first, last = off // chunk_size, (end - 1) // chunk_size
        bits[first:last + 1] = b"\x01" * (last + 1 - first)
    return bits


def _compact(pieces: list[Piece], length: int) -> str | None | list[Piece]:
    """An entry for a region made of ``pieces``: a single whole chunk as its address, all zeros as None."""
    if len(pieces) == 1:
        addr, off, n, whole = pieces[0]
        if addr is None:
            return None
        if off == 0 and n == whole == length:
            return addr
    return pieces


def _runs(pieces: list[Piece]) -> list[tuple[bool, int]]:
    """``(zeros?, length)`` of the runs of zero and of data pieces, in order."""
    out: list[tuple[bool, int]] = []
    for addr, _off, n, _whole in pieces:
        if out and out[-1][0] == (addr is None):
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((addr is None, n))
    return out


def _stored_in_flight(window: Iterable[tuple[int, Future | tuple | _Pack, tuple | None]]) -> int:
    """Bytes the finished, not yet settled writes of a backup's ``window`` (``(region, result, patch)``) stored
    as new chunks; a pack shared by several regions counts once, and not at all when it was settled already."""
    total = 0
    packs: set[int] = set()
    for _i, res, _patch in window:
        if isinstance(res, _Pack):
            if res.counted or id(res) in packs:
                continue
            packs.add(id(res))
            res = res.future
        if not isinstance(res, Future) or not res.done() or res.cancelled() or res.exception() is not None:
            continue
        kind, digest, stored, _raw_len = res.result()
        if kind == "patched":  # (kind, digest, extents, length) of the chunk stored for the differing extents
            kind = digest[0]
        if kind == "new":
            total += stored
    return total


def _entry_addresses(entries: Iterable[str | None | list[Piece]]) -> set[str]:
    """The chunk addresses index entries reference."""
    out: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            out.add(entry)
        elif entry:
            out.update(p[0] for p in entry if p[0])
    return out


class _Pack:
    """The changed extents of consecutive regions gathered into one chunk (stored once full, or when the backup
    must wait for it). ``future`` is set once submitted; ``regions`` counts the window entries still using it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.length = 0
        self.future: Future | None = None
        self.regions = 0
        self.counted = False


class _ChunkCache:
    """The last few small chunks (packs) a restore fetched: consecutive regions share them."""

    def __init__(self, slots: int = 4):
        self.slots = slots
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}

    def get(self, addr: str) -> bytes | None:
        with self._lock:
            return self._data.get(addr)

    def put(self, addr: str, data: bytes) -> None:
        with self._lock:
            self._data[addr] = data
            while len(self._data) > self.slots:
                del self._data[next(iter(self._data))]


class _BackupContext:
    """Per-backup state shared by the workers: addresses known present, and claims so that two workers never
    store the same chunk at once."""

    def __init__(self, known: set[str], lease_time: float):
        self.known = known
        self.lease_time = lease_time
        self.new_keys: list[str] = []
        self._lock = threading.Lock()
        self._claims: dict[str, threading.Event] = {}

    def claim(self, addr: str) -> tuple[bool, threading.Event]:
        """``(True, event)`` when the caller now owns ``addr``; ``(False, event)`` when another worker does (or
        the address is known: then the event is already set)."""
        with self._lock:
            if addr in self.known:
                ev = threading.Event()
                ev.set()
                return False, ev
            ev = self._claims.get(addr)
            if ev is not None:
                return False, ev
            ev = self._claims[addr] = threading.Event()
            return True, ev

    def release(self, addr: str) -> None:
        with self._lock:
            ev = self._claims.pop(addr, None)
        if ev is not None:
            ev.set()



class Bank:
    """A bank on an :class:`~opencsbs.bank.backends.ObjectStore`. Thread-safe: several backups, restores and a
    GC may run at once (also from several processes or hosts sharing the backend).

    ``threads``: workers hashing/compressing/encrypting and moving chunks (I/O-bound backends get more).
    Raises :class:`BankKeyError` when the key does not fit the bank.
    """

    def __init__(self, store: ObjectStore, codec: Codec, threads: int = 2, chunk_size: int = CHUNK_SIZE,
                 io_bound: bool = False):
        self.store = store
        self.codec = codec
        self.chunk_size = chunk_size
        self.threads = max(1, threads)
        self.workers = max(self.threads, 8) if io_bound else self.threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._zero_digest: dict[int, bytes] = {}
        #: opens the banks a restore takes a chunk from when this bank's copy is missing or damaged (replicas
        #: with the same addressing, docs/replication.md); called once, on the first such chunk
        self.fallback_opener: Callable[[], list[Bank]] | None = None
        self._fallbacks: list[Bank] | None = None
        self._format = BANK_FORMAT
        tune_malloc()  # chunk-sized buffers are reused instead of page-faulted in afresh (opencsbs.blockio.direct)
        self._check_config()

    # --- set-up --------------------------------------------------------------------------------------
    def _check_config(self) -> None:
        want = {"format": BANK_FORMAT, "chunk_size": self.chunk_size, "hash": self.codec.hash_name,
                "encrypted": self.codec.encrypted, "key_id": self.codec.key_id}
        try:
            have = json.loads(self.store.get("bank.json"))
        except ObjectNotFound:
            self.store.put("bank.json", json.dumps(want, indent=1).encode())
            self._format = BANK_FORMAT
            return
        if have.get("encrypted") and not self.codec.encrypted:
            raise BankKeyError(f"the bank at {self.store.location} is encrypted: set bank.encryption_key_file")
        if not have.get("encrypted") and self.codec.encrypted:
            raise BankKeyError(f"the bank at {self.store.location} was created without encryption")
        if have.get("key_id") != self.codec.key_id:
            raise BankKeyError(f"the encryption key does not belong to the bank at {self.store.location}")
        if have.get("format") not in (1, BANK_FORMAT) or have.get("chunk_size") != self.chunk_size:
            raise BankError(f"the bank at {self.store.location} has an unsupported format {have}")
        self._format = have["format"]

    def require_pieces_format(self) -> None:
        """Raise a format-1 bank to format 2 (``bank.json``) before the first index with pieces is written, so
        that an older opencsbs refuses the bank as a whole instead of failing on single indexes."""
        if self._format >= 2:
            return
        have = json.loads(self.store.get("bank.json"))
        if have.get("format", 1) < 2:
            have["format"] = 2
            self.store.put("bank.json", json.dumps(have, indent=1).encode())
        self._format = 2

    def executor(self) -> ThreadPoolExecutor:
        """The bank's worker pool (started on first use, :attr:`workers` threads)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bank")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads and release the backend. The pool is waited for outside ``_pool_lock``: a task
        still running (e.g. a chunk read that failed over to :meth:`_from_fallback`) may need that lock to end."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        with self._pool_lock:
            fallbacks, self._fallbacks = self._fallbacks or [], None
        for other in fallbacks:
            other.close()
        self.store.close()

    def __enter__(self) -> Bank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def zero_digest(self, length: int) -> bytes:
        """Digest of ``length`` zero bytes (cached)."""
        d = self._zero_digest.get(length)
        if d is None:
            d = self._zero_digest[length] = self.codec.digest(_ZERO[:length] if length <= CHUNK_SIZE
                                                              else bytes(length))
        return d

    def entry_digest(self, entry: str | list[Piece] | None, length: int) -> bytes:
        """The digest standing for one index entry (a region of ``length`` bytes) in the volume hash."""
        if entry is None:
            return self.zero_digest(length)
        if isinstance(entry, str):
            return bytes.fromhex(entry)
        return self.codec.digest(pieces_digest_input(entry))

    def volume_hash(self, idx: VolumeIndex) -> str:
        """The volume hash of the entries of ``idx`` (what its ``volume_hash`` must be)."""
        h = self.codec.volume_hasher()
        for i, entry in enumerate(idx.chunks):
            h.update(self.entry_digest(entry, idx.chunk_length(i)))
        return h.hexdigest()

    # --- indexes -------------------------------------------------------------------------------------
    def read_index(self, index_name: str) -> VolumeIndex:
        """The index called ``index_name``. Raises :class:`IndexNotFound` or :class:`ChunkDamaged`."""
        check_index_name(index_name)
        try:
            blob = self.store.get(index_key(index_name))
        except ObjectNotFound:
            raise IndexNotFound(index_name) from None
        raw = self.codec.decode_index(index_name, blob)
        try:
            idx = VolumeIndex.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise ChunkDamaged(f"index {index_name}", f"unreadable: {exc}") from None
        if idx.name != index_name:
            raise ChunkDamaged(f"index {index_name}", f"holds index {idx.name!r}")
        return idx

    def list_indexes(self, prefix: str = "") -> list[str]:
        """Names of the indexes starting with ``prefix``, sorted."""
        names = []
        for info in self.store.list("indexes/" + prefix):
            if info.key.endswith(".idx"):
                names.append(info.key[len("indexes/"):-len(".idx")])
        return sorted(names)

    def delete_index(self, index_name: str) -> None:
        """Drop an index (its chunks are freed by the next :meth:`gc`). Absent indexes are ignored."""
        self.store.delete(index_key(check_index_name(index_name)))

    def retain_index(self, index_name: str, mode: str, until: datetime) -> int:
        """Have the storage keep the index ``index_name`` and every chunk it names until ``until`` (naive UTC
        or aware), ``mode`` ``"GOVERNANCE"`` or ``"COMPLIANCE"`` (S3 Object Lock, bank option
        ``s3_object_lock``); longer or stronger retentions in force are kept. The number of objects retained;
        0 where the store enforces no retention. Raises :class:`IndexNotFound`, :class:`BankError`."""
        if not self.store.enforces_retention:
            return 0
        keys = [chunk_key(a) for a in sorted(self.read_index(index_name).addresses())]
        done = sum(self.executor().map(lambda k: self.store.retain(k, mode, until), keys))
        return done + int(self.store.retain(index_key(check_index_name(index_name)), mode, until))

    # --- leases (backups in flight) ------------------------------------------------------------------
    def _open_lease(self, index_name: str, base_index: str | None) -> tuple[str, float]:
        lease_id = uuid.uuid4().hex
        key = f"leases/{lease_id}.json"
        doc = {"index": index_name, "base_index": base_index, "host": socket.gethostname(), "pid": os.getpid(),
               "started_at": utcnow_iso()}
        # a lease only matters while its process lives: visible is enough, durable is not needed
        self.store.put(key, json.dumps(doc).encode(), sync=False)
        info = self.store.head(key)
        return key, (info.mtime if info else time.time())

    # --- backup --------------------------------------------------------------------------------------
    def backup_volume(self, reader: BlockReader, index_name: str, base_index: str | None = None,
                      changed_ranges: Sequence[Range] | None = None, progress: Progress | None = None,
                      metadata: dict[str, Any] | None = None,
                      on_stored: Callable[[int], None] | None = None) -> IndexStats:
        """Back up the volume ``reader`` reads into the index ``index_name`` (replacing any index of that name).

        ``base_index``: a previous backup of the same volume; its chunks count as present (incremental
        forever). ``changed_ranges`` (only with ``base_index``): ``(offset, length)`` byte ranges changed since
        the base; other regions are taken from the base without reading, and of a changed region only its changed
        64 KiB extents are read and stored when they are few (the region becomes pieces, docs/bank.md).
        Without ``changed_ranges`` a region that differs from the base is compared with it and stored likewise. Ranges ``reader.allocated_ranges()``
        leaves out are zeros and not read. ``progress(bytes_done, bytes_total)`` is called from this thread.
        ``on_stored(stored_bytes)`` is called from this thread with this call's ``stored_bytes`` so far (bytes
        written to the store, after compression/encryption) each time it grows, before the ``progress`` call that
        follows, and also while an interrupted call winds down (an exception, from ``progress`` or elsewhere): the
        chunks the bank's threads were still writing are waited for and counted, so the last figure it got is what
        the call left in the store, whether it ended or not; ``on_stored`` must not raise.
        The index is written last, atomically: an interrupted backup leaves no index, only chunks that a later
        :meth:`gc` removes. A reader with a ``verify()`` method is asked to confirm its data just before the index is
        written (it raises when its source vanished during the copy). Raises :class:`BankError` (:class:`IndexNotFound` for a missing base).
        """
        started = time.monotonic()
        check_index_name(index_name)
        if changed_ranges is not None and base_index is None:
            raise BankError("changed_ranges needs a base_index")
        size = int(reader.size)
        cs = self.chunk_size
        n = -(-size // cs) if size else 0
        base = self.read_index(base_index) if base_index else None
        if base is not None and base.chunk_size != cs:
            if changed_ranges is not None:
                raise BankError(f"base index {base_index} has chunk size {base.chunk_size}, not {cs}")
            base = None

        allocated = reader.allocated_ranges()
        readable = _chunk_bitmap(allocated, n, cs, size) if allocated is not None else bytearray(b"\x01" * n)
        # plan per region: ("read",), ("zero",), ("base", entry) taken from the base without reading, or
        # ("patch", base pieces, extents): only the changed extents are read and stored (docs/bank.md)
        plan: list[tuple] = []
        extents_of = region_extents(changed_ranges, cs, size) if changed_ranges is not None else None
        for i in range(n):
            length = min(cs, size - i * cs)
            same_base = extents_of is not None and base is not None and i < base.chunk_count \
                and base.chunk_length(i) == length
            if same_base and i not in extents_of:
                plan.append(("base", base.chunks[i]))
            elif not readable[i]:
                plan.append(("zero",))
            elif same_base and self._patchable(base.pieces(i), extents_of[i], length):
                plan.append(("patch", base.pieces(i), extents_of[i]))
            elif extents_of is None and base is not None and i < base.chunk_count \
                    and base.chunk_length(i) == length:
                plan.append(("reread", base.chunks[i]))  # compared with the base: only what differs is stored
            else:
                plan.append(("read", None))

        known: set[str] = base.addresses() if base is not None else set()
        from_base = set(known)
        reused: set[str] = set()
        lease_key, lease_time = self._open_lease(index_name, base_index)
        ctx = _BackupContext(known, lease_time)
        stats = IndexStats(size=size, chunk_count=n, zero_chunks=0, new_chunks=0, stored_bytes=0, read_bytes=0,
                           seconds=0.0)
        chunks: list[str | None | list[Piece]] = []
        done = 0
        pool = self.executor()
        window: deque[tuple[int, Future | tuple | _Pack, tuple | None]] = deque()
        limit = self.workers * 2
        busy = 0  # futures in the window: region reads and submitted packs (bounds memory)
        pack: _Pack | None = None

        def submit_pack() -> None:
            nonlocal pack, busy
            if pack is not None:
                data = pack.parts[0] if len(pack.parts) == 1 else b"".join(pack.parts)
                pack.parts = []
                pack.future = pool.submit(self._put_chunk, data, ctx)
                busy += 1
                pack = None

        def ready(res: Future | tuple | _Pack) -> bool:
            if isinstance(res, _Pack):
                return res.future is not None and res.future.done()
            # a finished chunk is settled at once, so progress moves while the rest of the window is written
            return res.done() if isinstance(res, Future) else True

        def count(kind: str, digest: Any, stored: int, raw_len: int) -> None:
            if kind == "new":
                stats.new_chunks += 1
                stats.stored_bytes += stored
                stats.new_bytes += raw_len
                if on_stored is not None and stored:
                    on_stored(stats.stored_bytes)
            elif kind == "reused":
                stats.reused_chunks += 1
                reused.add(digest.hex())
            elif kind == "base" and digest is not None:
                stats.reused_chunks += 1

        def settle(item: tuple[int, Future | tuple | _Pack, tuple | None]) -> None:
            nonlocal done, busy
            i, res, patch = item
            length = min(cs, size - i * cs)
            if isinstance(res, _Pack):
                if res.future is None:
                    submit_pack()
                kind, digest, stored, raw_len = res.future.result()
                if not res.counted:
                    res.counted = True
                    count(kind, digest, stored, raw_len)
                res.regions -= 1
                if res.regions == 0:
                    busy -= 1
            else:
                if isinstance(res, Future):
                    busy -= 1
                kind, digest, stored, raw_len = res.result() if isinstance(res, Future) else res
                if kind == "patched":  # re-read, compared with the base: the differing extents, stored
                    kind, digest, extents, pack_len = digest
                    count(kind, digest, stored, raw_len)
                    stats.patched_regions += 1
                    chunks.append(_compact(overlay_pieces(base.pieces(i), extents,
                                                          digest.hex() if kind != "zero" else None, pack_len),
                                           length))
                    done += length
                    if progress is not None:
                        progress(done, size)
                    return
                count(kind, digest, stored, raw_len)
            if patch is not None:
                base_pieces, extents, pack_off = patch
                entry: str | None | list[Piece] = _compact(overlay_pieces(
                    base_pieces, extents, digest.hex() if kind != "zero" else None,
                    res.length if isinstance(res, _Pack) else 0, pack_off), length)
                stats.patched_regions += 1
            elif kind == "base":
                entry = digest
            elif kind == "zero":
                entry = None
            else:
                entry = digest.hex()
            if entry is None:
                stats.zero_chunks += 1
            chunks.append(entry)
            done += length
            if progress is not None:
                progress(done, size)

        try:
            for i, step in enumerate(plan):
                off = i * cs
                length = min(cs, size - off)
                if step[0] in ("read", "reread"):
                    data = reader.read(off, length)
                    if len(data) != length:
                        raise BankError(f"short read at {off}: {len(data)} of {length} bytes")
                    stats.read_bytes += length
                    if step[0] == "reread":
                        window.append((i, pool.submit(self._compare_and_put, data, step[1], ctx), None))
                    else:
                        window.append((i, pool.submit(self._put_chunk, data, ctx), None))
                    busy += 1
                elif step[0] == "patch":
                    parts = []
                    for s, e in step[2]:
                        part = reader.read(off + s, e - s)
                        if len(part) != e - s:
                            raise BankError(f"short read at {off + s}: {len(part)} of {e - s} bytes")
                        parts.append(part)
                    n_read = sum(len(p) for p in parts)
                    stats.read_bytes += n_read
                    if all(p == _ZERO[:len(p)] for p in parts):
                        window.append((i, ("zero", None, 0, 0), (step[1], step[2], 0)))
                    else:
                        if pack is not None and pack.length + n_read > PACK_SIZE:
                            submit_pack()
                        if pack is None:
                            pack = _Pack()
                        window.append((i, pack, (step[1], step[2], pack.length)))
                        pack.parts.extend(parts)
                        pack.length += n_read
                        pack.regions += 1
                elif step[0] == "zero":
                    window.append((i, ("zero", None, 0, 0), None))
                else:
                    window.append((i, ("base", step[1], 0, 0), None))
                if pack is not None and len(window) > 256:
                    submit_pack()  # unchanged regions waiting behind a pack stay few
                while window and (busy > limit or ready(window[0][1])):
                    settle(window.popleft())
            submit_pack()
            while window:
                settle(window.popleft())
            # a garbage collection that overlapped this backup may have removed a chunk found present:
            # re-write every such chunk from the volume before the index makes them referenced
            in_use = _entry_addresses(chunks)
            if reused or from_base:
                self._restore_reused(reader, chunks, (reused | from_base) & in_use, lease_time, ctx, stats,
                                     on_stored)
            # the new chunks reach stable storage before the index that references them
            keys = ctx.new_keys
            step = max(1, -(-len(keys) // self.workers))
            for fut in [pool.submit(self.store.sync, keys[i:i + step]) for i in range(0, len(keys), step)]:
                fut.result()
            # a reader whose source may vanish under it (an RBD snapshot deleted meanwhile reads as zeros)
            # confirms that everything it returned was real before the index makes it a backup
            verify = getattr(reader, "verify", None)
            if verify is not None:
                verify()
            stats.seconds = time.monotonic() - started
            idx = VolumeIndex(name=index_name, size=size, chunk_size=cs, chunks=chunks, volume_hash="",
                              hash=self.codec.hash_name, created_at=utcnow_iso(),
                              base_index=base_index, metadata=dict(metadata or {}), stats=asdict(stats))
            idx.volume_hash = self.volume_hash(idx)
            if idx.has_pieces:
                self.require_pieces_format()
            self.store.put(index_key(index_name), self.codec.encode_index(index_name, idx.to_json()))
        except BaseException:
            pending = [res.future if isinstance(res, _Pack) else res for _i, res, _p in window]
            for res in pending:
                if isinstance(res, Future):
                    res.cancel()
            for res in pending:
                if isinstance(res, Future) and not res.cancelled():
                    try:
                        res.result()
                    except BaseException:  # noqa: BLE001 - the first error is the one raised
                        pass
            # what the bank's threads wrote for regions not settled yet is in the store all the same: count it
            late = _stored_in_flight(window)
            if late and on_stored is not None:
                stats.stored_bytes += late
                on_stored(stats.stored_bytes)
            raise
        finally:
            try:
                self.store.delete(lease_key)
            except Exception:  # noqa: BLE001 - a left lease only delays GC; it expires
                pass
        stats.seconds = time.monotonic() - started
        return stats


    @staticmethod
    def _patchable(base_pieces: list[Piece], extents: list[list[int]], length: int) -> bool:
        """Whether a changed region is better stored as pieces (its changed extents only) than read whole: the
        extents are at most half of it, and the pieces stay within :data:`MAX_PIECES` and
        :data:`MAX_PIECE_CHUNKS` (else the region is rolled into one new whole chunk)."""
        if sum(e - s for s, e in extents) * 2 > length:
            return False
        pieces = overlay_pieces(base_pieces, extents, "+", 0)
        return len(pieces) <= MAX_PIECES and len({p[0] for p in pieces if p[0]}) <= MAX_PIECE_CHUNKS

    def _restore_reused(self, reader: BlockReader, chunks: list[str | None | list[Piece]], addresses: set[str],
                        lease_time: float, ctx: _BackupContext, stats: IndexStats,
                        on_stored: Callable[[int], None] | None = None) -> None:
        """Make sure every chunk this backup did not write itself (dedup hits, chunks of the base index) is in
        the bank before its index is written, whatever garbage collections ran meanwhile.

        Only a GC that read the leases before this backup's lease existed can remove such a chunk (any later one
        keeps them, see docs/bank.md). So, when a GC overlapped the backup: look every such chunk up, write the
        missing ones again from the volume (``reader``; a rewritten chunk is newer than the cutoff of every GC
        running), and repeat until a round starts with no GC running that began before the lease (one still
        running may delete after the look-ups; a later one keeps every chunk of this backup). A region made of
        pieces that needs a missing chunk is read from the volume and stored whole (its entry becomes that
        chunk). Raises :class:`ChunkMissing` only when the volume no longer holds a chunk's bytes. Every chunk
        written again adds to ``stats.stored_bytes`` (and ``on_stored(stats.stored_bytes)`` is called).
        """
        first: dict[str, int] = {}
        for i, entry in enumerate(chunks):
            if isinstance(entry, str) and entry in addresses and entry not in first:
                first[entry] = i
        cs = self.chunk_size
        while gc_overlapped(self.store, lease_time):
            # asked before the look-ups: an older GC that ends after this point cannot be missed by them
            older_gc_running = gc_before_lease_running(self.store, lease_time)
            for addr in sorted(addresses):
                key = chunk_key(addr)
                if self.store.head(key) is not None:
                    continue
                if addr in first:
                    i = first[addr]
                    offset = i * cs
                    data = reader.read(offset, min(cs, int(reader.size) - offset))
                    digest = self.codec.digest(data)
                    if digest.hex() != addr:
                        raise ChunkMissing(key)  # the volume changed under the base index: nothing to rewrite from
                    blob = self.codec.encode_chunk(digest, data)
                    self.store.put(key, blob, sync=False)
                    ctx.new_keys.append(key)
                    stats.read_bytes += len(data)
                    stats.stored_bytes += len(blob)
                    stats.rewritten_chunks += 1
                    if on_stored is not None:
                        on_stored(stats.stored_bytes)
                for i, entry in enumerate(chunks):
                    if not isinstance(entry, list) or all(p[0] != addr for p in entry):
                        continue
                    offset = i * cs
                    data = reader.read(offset, min(cs, int(reader.size) - offset))
                    stats.read_bytes += len(data)
                    if data == _ZERO[:len(data)]:
                        chunks[i] = None
                        continue
                    digest = self.codec.digest(data)
                    blob = self.codec.encode_chunk(digest, data)
                    self.store.put(chunk_key(digest.hex()), blob, sync=False)
                    ctx.new_keys.append(chunk_key(digest.hex()))
                    stats.stored_bytes += len(blob)
                    stats.rewritten_chunks += 1
                    if on_stored is not None:
                        on_stored(stats.stored_bytes)
                    chunks[i] = digest.hex()
            if not older_gc_running:
                return
            time.sleep(GC_WAIT_SECONDS)

    def _compare_and_put(self, data: bytes, entry: str | None | list[Piece], ctx: _BackupContext) -> tuple:
        """Runs in a worker: ``data`` of a region the base holds as ``entry`` (re-reading, no changed ranges).

        The same bytes: the base's entry again; a chunk the bank already holds: that chunk (dedup). Otherwise
        the region is compared with the base's bytes (read from the bank) in 64 KiB extents and, when few differ, only those are stored (one chunk) and the region
        becomes pieces (``("patched", (kind, digest, extents, length), stored, raw_len)``); else
        :meth:`_put_chunk`."""
        length = len(data)
        if data == _ZERO[:length]:
            return ("zero", None, 0, 0)
        digest = self.codec.digest(data)
        addr = digest.hex()
        if addr == entry or addr in ctx.known or self.store.head(chunk_key(addr)) is not None:
            # the base's own chunk, or one the bank has (dedup): nothing stored
            return self._put_chunk(data, ctx, digest)
        try:
            old = self.read_entry(entry, length) if entry else _ZERO[:length]
        except (ChunkMissing, ChunkDamaged):
            return self._put_chunk(data, ctx, digest)
        if isinstance(entry, list) and old == data:
            return ("base", entry, 0, 0)
        extents: list[list[int]] = []
        for s in range(0, length, EXTENT_ALIGN):
            e = min(length, s + EXTENT_ALIGN)
            if data[s:e] != old[s:e]:  # bytes compare (memcmp); memoryview compares element by element
                if extents and extents[-1][1] == s:
                    extents[-1][1] = e
                else:
                    extents.append([s, e])
        base_pieces = VolumeIndex.entry_pieces(entry, length)
        if not extents or not self._patchable(base_pieces, extents, length):
            return self._put_chunk(data, ctx, digest)
        pack = b"".join(data[s:e] for s, e in extents)
        kind, digest, stored, raw_len = self._put_chunk(pack, ctx)
        return ("patched", (kind, digest, extents, len(pack)), stored, raw_len)

    def _put_chunk(self, data: bytes, ctx: _BackupContext,
                   digest: bytes | None = None) -> tuple[str, bytes | None, int, int]:
        """Runs in a worker: zero test, hash (unless ``digest`` is given), existence check, encode, store."""
        if digest is None:
            if data == _ZERO[:len(data)]:
                return ("zero", None, 0, 0)
            digest = self.codec.digest(data)
        addr = digest.hex()
        mine, event = ctx.claim(addr)
        if not mine:
            event.wait()  # another worker of this backup stores the same chunk
            if addr in ctx.known:
                return ("reused", digest, 0, 0)
            mine, event = ctx.claim(addr)  # it failed: try ourselves
            if not mine:
                event.wait()
                return ("reused", digest, 0, 0) if addr in ctx.known else self._put_chunk(data, ctx)
        try:
            key = chunk_key(addr)
            info = self.store.head(key)
            if info is not None:
                if info.mtime < ctx.lease_time - TOUCH_AGE:
                    try:  # renew it so a concurrent GC's cutoff keeps it (see docs/bank.md)
                        self.store.touch(key)
                    except ObjectNotFound:
                        info = None
                if info is not None:
                    ctx.known.add(addr)
                    return ("reused", digest, 0, 0)
            blob = self.codec.encode_chunk(digest, data)
            self.store.put(key, blob, sync=False)  # made durable in one pass before the index is written
            ctx.new_keys.append(key)
            ctx.known.add(addr)
            return ("new", digest, len(blob), len(data))
        finally:
            ctx.release(addr)

    # --- restore -------------------------------------------------------------------------------------
    def _get_chunk(self, address: str, length: int) -> bytes:
        key = chunk_key(address)
        try:
            try:
                blob = self.store.get(key)
            except ObjectNotFound:
                raise ChunkMissing(key) from None
            return self.codec.decode_chunk(bytes.fromhex(address), blob, length, name=key)
        except (ChunkMissing, ChunkDamaged):
            data = self._from_fallback(address, length)
            if data is None:
                raise
            return data

    def read_entry(self, entry: str | list[Piece], length: int, cache: _ChunkCache | None = None) -> bytes:
        """The plaintext of one region: a whole chunk, or its pieces assembled (each chunk fetched once and
        checked against its address; zero pieces stay zeros). ``cache`` keeps chunks smaller than a region
        (packs) for the next regions."""
        if isinstance(entry, str):
            return self._get_chunk(entry, length)
        out = bytearray(length)
        slices: dict[str, list[tuple[int, int, int]]] = {}
        whole_of: dict[str, int] = {}
        pos = 0
        for addr, off, n, whole in entry:
            if addr:
                slices.setdefault(addr, []).append((pos, off, n))
                whole_of[addr] = whole
            pos += n
        for addr, parts in slices.items():
            data = cache.get(addr) if cache is not None else None
            if data is None:
                data = self._get_chunk(addr, whole_of[addr])
                if cache is not None and whole_of[addr] < self.chunk_size:
                    cache.put(addr, data)
            view = memoryview(data)
            for pos, off, n in parts:
                out[pos:pos + n] = view[off:off + n]
        return bytes(out)

    def _from_fallback(self, address: str, length: int) -> bytes | None:
        """The chunk ``address`` from a fallback bank (a replica addressing chunks alike), written back here
        (repair); None when no fallback has it intact."""
        with self._pool_lock:
            if self._fallbacks is None:
                self._fallbacks = self.fallback_opener() if self.fallback_opener is not None else []
            fallbacks = list(self._fallbacks)
        for other in fallbacks:
            if (other.codec.key_id, other.codec.hash_name, other.chunk_size) != \
                    (self.codec.key_id, self.codec.hash_name, self.chunk_size):
                continue
            key = chunk_key(address)
            try:
                blob = other.store.get(key)
                data = other.codec.decode_chunk(bytes.fromhex(address), blob, length, name=key)
            except (ObjectNotFound, BankError, OSError):
                continue
            try:
                self.store.put(key, blob)  # repair the primary's copy
            except Exception:  # noqa: BLE001 - the restore goes on; the next verify reports the chunk
                pass
            return data
        return None

    def check_volume(self, index_name: str, progress: Progress | None = None) -> int:
        """Check that every chunk of the volume backup ``index_name`` is present and intact (read, decrypted,
        decompressed and hashed against its address, as a restore would), writing nothing; returns how many
        chunks it checked. ``progress(bytes_checked, size)``. Raises :class:`IndexNotFound`,
        :class:`ChunkMissing`, :class:`ChunkDamaged`, :class:`BankError`."""
        idx = self.read_index(index_name)
        pool = self.executor()
        window: deque[tuple[int, Future]] = deque()
        limit = self.workers * 2
        done = 0
        seen: set[str] = set()

        def settle(j: int, fut: Future) -> None:
            nonlocal done
            fut.result()
            done += j
            if progress is not None:
                progress(done, idx.size)

        try:
            for i in range(idx.chunk_count):
                length = idx.chunk_length(i)
                todo = [(a, whole) for a, _off, _n, whole in idx.pieces(i) if a and a not in seen]
                if not todo:
                    done += length
                    continue
                for k, (addr, whole) in enumerate(todo):
                    seen.add(addr)
                    window.append((length if k == len(todo) - 1 else 0, pool.submit(self._get_chunk, addr, whole)))
                while len(window) > limit:
                    settle(*window.popleft())
            while window:
                settle(*window.popleft())
        except BaseException:
            for _i, fut in window:
                fut.cancel()
            raise
        return len(seen)

    def restore_volume(self, index_name: str, writer: BlockWriter, progress: Progress | None = None) -> RestoreStats:
        """Write the volume backup ``index_name`` onto ``writer`` (its first ``size`` bytes), byte-exact.

        Every chunk is checked against its address and the whole volume against the index's ``volume_hash``;
        zero chunks go through ``writer.write_zeroes``. ``writer.flush()`` is called at the end.
        Raises :class:`IndexNotFound`, :class:`ChunkMissing`, :class:`ChunkDamaged`, :class:`BankError`.
        """
        started = time.monotonic()
        idx = self.read_index(index_name)
        if writer.size < idx.size:
            raise BankError(f"target of {writer.size} bytes is smaller than the backup ({idx.size} bytes)")
        pool = self.executor()
        window: deque[tuple[int, Future | None]] = deque()
        limit = self.workers * 2
        vhash = self.codec.volume_hasher()
        written = zero = done = 0
        zero_run: list[int] = []  # [start, length] of pending zeros
        cache = _ChunkCache()

        def flush_zeros() -> None:
            if zero_run:
                writer.write_zeroes(zero_run[0], zero_run[1])
                zero_run.clear()

        def settle(item: tuple[int, Future | None]) -> None:
            nonlocal written, zero, done
            i, fut = item
            off = i * idx.chunk_size
            length = idx.chunk_length(i)
            if fut is None:
                vhash.update(self.zero_digest(length))
                if zero_run:
                    zero_run[1] += length
                else:
                    zero_run.extend((off, length))
                zero += length
            else:
                data = fut.result()
                entry = idx.chunks[i]
                vhash.update(self.entry_digest(entry, length))
                if isinstance(entry, str):
                    flush_zeros()
                    writer.write(off, data)
                    written += length
                else:  # pieces: zero pieces become zeros (holes where the writer can), runs of others are written
                    pos = 0
                    for is_zero, n in _runs(entry):
                        if is_zero:
                            if zero_run and zero_run[0] + zero_run[1] == off + pos:
                                zero_run[1] += n
                            else:
                                flush_zeros()
                                zero_run.extend((off + pos, n))
                            zero += n
                        else:
                            flush_zeros()
                            writer.write(off + pos, data[pos:pos + n] if n < length else data)
                            written += n
                        pos += n
            done += length
            if progress is not None:
                progress(done, idx.size)

        try:
            for i, entry in enumerate(idx.chunks):
                window.append((i, pool.submit(self.read_entry, entry, idx.chunk_length(i), cache) if entry else None))
                while len(window) > limit or (window and window[0][1] is None):
                    settle(window.popleft())
            while window:
                settle(window.popleft())
            flush_zeros()
        except BaseException:
            for _i, fut in window:
                if fut is not None:
                    fut.cancel()
            raise
        if vhash.hexdigest() != idx.volume_hash:
            raise ChunkDamaged(f"index {index_name}", "volume hash mismatch")
        writer.flush()
        return RestoreStats(size=idx.size, written_bytes=written, zero_bytes=zero, seconds=time.monotonic() - started)

    # --- maintenance ---------------------------------------------------------------------------------
    def gc(self, grace_seconds: float = 3600.0) -> GCReport:
        """Delete the chunks no index references: :func:`opencsbs.bank.gc.collect_garbage` on this bank."""
        return collect_garbage(self, grace_seconds)

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-read and check every index and chunk: :func:`opencsbs.bank.verify.verify_bank` on this bank."""
        return verify_bank(self, progress)
