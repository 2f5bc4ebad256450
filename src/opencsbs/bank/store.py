"""The bank: content-addressed chunks plus one index per volume backup (see ``docs/bank.md``).

Layout of the objects in a backend (local folder or S3 bucket)::

    bank.json                         format, chunk size, hash, encryption key identifier
    chunks/<aa>/<address>             one chunk (envelope, see :mod:`opencsbs.bank.codec`)
    indexes/<index name>.idx          one volume backup: ordered chunk addresses, size, hashes, metadata
    leases/<id>.json                  a backup in flight (protects its chunks from garbage collection)
    gc/running/<id>, gc/finished      garbage collections in progress / the end of the last one
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
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
from opencsbs.blockio import tune_malloc
from opencsbs.core.blocks import BlockReader, BlockWriter, Range

#: fixed chunk size for disk images (bytes)
CHUNK_SIZE = 4 << 20
FORMAT = 1
#: a backup that reuses a chunk older than this (seconds, relative to its start) renews the chunk's mtime
TOUCH_AGE = 3600.0
#: extra margin (seconds) for clock resolution (S3 LastModified has 1 s) and slow calls
SAFETY = 300.0
#: a lease older than this (seconds) is treated as left behind by a crashed backup
LEASE_MAX_AGE = 2 * 86400.0
#: a GC marker older than this is treated as left behind by a crashed GC
GC_MARKER_MAX_AGE = 86400.0
#: a GC marker not newer than a lease by this much (seconds; S3 LastModified has whole seconds) may have been
#: written before the GC read the leases without seeing that lease
LEASE_CLOCK_SLACK = 2.0
#: how often (seconds) a finishing backup looks again while an older GC still runs
GC_WAIT_SECONDS = 0.2
#: a running GC renews its ``gc/running/<id>`` marker at least this often (seconds); a marker not renewed for
#: :data:`GC_MARKER_LEASE`, or naming a dead process of this host, is stale (left by a killed GC)
GC_MARKER_RENEW = 60.0
GC_MARKER_LEASE = 600.0

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_ADDR_RE = re.compile(r"^[0-9a-f]{64}$")
_ZERO = bytes(CHUNK_SIZE)

Progress = Callable[[int, int], None]


def chunk_key(address: str) -> str:
    """The object key of the chunk with hex ``address``."""
    return f"chunks/{address[:2]}/{address}"


def index_key(name: str) -> str:
    """The object key of the index called ``name``."""
    return f"indexes/{name}.idx"


def check_index_name(name: str) -> str:
    """``name`` if it is a valid index name (``/``-separated parts of ``[A-Za-z0-9._-]``, not starting with
    ``.`` or ``-``, at most 512 characters); raises :class:`BankError` otherwise."""
    if not isinstance(name, str) or len(name) > 512 or not _NAME_RE.match(name):
        raise BankError(f"invalid index name {name!r}")
    return name


def _utcnow_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


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


@dataclass
class RestoreStats:
    """Figures of one restore: ``written_bytes`` of data written, ``zero_bytes`` left/punched as zeros."""

    size: int
    written_bytes: int
    zero_bytes: int
    seconds: float


@dataclass
class VolumeIndex:
    """One volume backup as stored in the bank.

    ``chunks``: hex addresses in volume order, ``None`` for an all-zero chunk; the last chunk may be shorter
    than ``chunk_size``. ``volume_hash``: BLAKE3 (keyed when encrypted) over the chunk digests in order (a
    zero chunk counts with the digest of its zero bytes), checked by every restore."""

    name: str
    size: int
    chunk_size: int
    chunks: list[str | None]
    volume_hash: str
    hash: str = "blake3"
    created_at: str = ""
    base_index: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    def addresses(self) -> set[str]:
        """The distinct non-zero chunk addresses."""
        return {a for a in self.chunks if a}

    def chunk_length(self, i: int) -> int:
        """Length in bytes of chunk ``i``."""
        return min(self.chunk_size, self.size - i * self.chunk_size)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, **asdict(self)}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> VolumeIndex:
        doc = json.loads(raw)
        if doc.pop("format", None) != FORMAT:
            raise ValueError("unknown index format")
        idx = cls(**doc)
        n = -(-idx.size // idx.chunk_size) if idx.size else 0
        if len(idx.chunks) != n or any(a is not None and not _ADDR_RE.match(a) for a in idx.chunks):
            raise ValueError("chunk list does not match the size")
        return idx


@dataclass
class GCReport:
    """What a garbage collection did. ``cutoff``: POSIX time; unreferenced chunks written or renewed after it
    were kept (``kept_recent``). ``skipped_reason`` is set when the sweep was not run (unsafe)."""

    indexes: int = 0
    referenced_chunks: int = 0
    chunks_seen: int = 0
    deleted_chunks: int = 0
    freed_bytes: int = 0
    kept_recent: int = 0
    in_flight_backups: int = 0
    stale_leases: int = 0
    #: ``gc/running/*`` markers of killed GCs removed
    stale_gc_markers: int = 0
    #: bytes of the unreferenced chunks kept only for the grace period (or for a backup in flight): what the next
    #: GC after the cutoff frees
    reclaimable_bytes: int = 0
    temporary_removed: int = 0
    cutoff: float = 0.0
    seconds: float = 0.0
    skipped_reason: str | None = None
    errors: list[str] = field(default_factory=list)


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
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.damaged_indexes or self.damaged_chunks or self.missing_chunks)


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        tune_malloc()  # chunk-sized buffers are reused instead of page-faulted in afresh (opencsbs.blockio)
        self._check_config()

    # --- set-up --------------------------------------------------------------------------------------
    def _check_config(self) -> None:
        want = {"format": FORMAT, "chunk_size": self.chunk_size, "hash": self.codec.hash_name,
                "encrypted": self.codec.encrypted, "key_id": self.codec.key_id}
        try:
            have = json.loads(self.store.get("bank.json"))
        except ObjectNotFound:
            self.store.put("bank.json", json.dumps(want, indent=1).encode())
            return
        if have.get("encrypted") and not self.codec.encrypted:
            raise BankKeyError(f"the bank at {self.store.location} is encrypted: set bank.encryption_key_file")
        if not have.get("encrypted") and self.codec.encrypted:
            raise BankKeyError(f"the bank at {self.store.location} was created without encryption")
        if have.get("key_id") != self.codec.key_id:
            raise BankKeyError(f"the encryption key does not belong to the bank at {self.store.location}")
        if have.get("format") != FORMAT or have.get("chunk_size") != self.chunk_size:
            raise BankError(f"the bank at {self.store.location} has an unsupported format {have}")

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bank")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads and release the backend."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
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

    # --- leases (backups in flight) ------------------------------------------------------------------
    def _open_lease(self, index_name: str, base_index: str | None) -> tuple[str, float]:
        lease_id = uuid.uuid4().hex
        key = f"leases/{lease_id}.json"
        doc = {"index": index_name, "base_index": base_index, "host": socket.gethostname(), "pid": os.getpid(),
               "started_at": _utcnow_iso()}
        # a lease only matters while its process lives: visible is enough, durable is not needed
        self.store.put(key, json.dumps(doc).encode(), sync=False)
        info = self.store.head(key)
        return key, (info.mtime if info else time.time())

    def _gc_marker_stale(self, key: str, mtime: float, now: float) -> bool:
        """Whether the GC marker ``key`` was left by a GC that no longer runs: not renewed for
        :data:`GC_MARKER_LEASE`, or its owner (``host``/``pid`` in the marker) is a dead process of this host."""
        if mtime < now - GC_MARKER_LEASE:
            return True
        try:
            doc = json.loads(self.store.get(key))
        except (ObjectNotFound, ValueError):
            return False
        return (doc.get("host") == socket.gethostname() and isinstance(doc.get("pid"), int)
                and not _pid_alive(doc["pid"]))

    def _gc_overlapped(self, since: float) -> bool:
        """Whether a garbage collection ran at some moment after ``since`` (backend time). A stale marker (a
        killed GC) counts only for backups that started before its last renewal + :data:`GC_MARKER_LEASE` (it
        may have deleted until then), not for ever."""
        now = time.time()
        for info in self.store.list("gc/"):
            if info.key.startswith("gc/running/"):
                if not self._gc_marker_stale(info.key, info.mtime, now) or since <= info.mtime + GC_MARKER_LEASE:
                    return True
            if info.key == "gc/finished" and info.mtime >= since - 2.0:
                return True
        return False

    def _drop_stale_gc_markers(self, report: GCReport) -> None:
        """Delete the ``gc/running/*`` markers of killed GCs (see :meth:`_gc_marker_stale`)."""
        now = time.time()
        for info in list(self.store.list("gc/running/")):
            if self._gc_marker_stale(info.key, info.mtime, now):
                self.store.delete(info.key)
                report.stale_gc_markers += 1

    # --- backup --------------------------------------------------------------------------------------
    def backup_volume(self, reader: BlockReader, index_name: str, base_index: str | None = None,
                      changed_ranges: Sequence[Range] | None = None, progress: Progress | None = None,
                      metadata: dict[str, Any] | None = None) -> IndexStats:
        """Back up the volume ``reader`` reads into the index ``index_name`` (replacing any index of that name).

        ``base_index``: a previous backup of the same volume; its chunks count as present (incremental
        forever). ``changed_ranges`` (only with ``base_index``): ``(offset, length)`` byte ranges changed since
        the base; other chunks are taken from the base without reading. Ranges ``reader.allocated_ranges()``
        leaves out are zeros and not read. ``progress(bytes_done, bytes_total)`` is called from this thread.
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
        # plan: None = read, "" = zero, address = taken from the base
        plan: list[str | None] = []
        changed = _chunk_bitmap(changed_ranges, n, cs, size) if changed_ranges is not None else None
        for i in range(n):
            length = min(cs, size - i * cs)
            if changed is not None and base is not None and not changed[i] and i < base.chunk_count \
                    and base.chunk_length(i) == length:
                plan.append(base.chunks[i] or "")
            elif not readable[i]:
                plan.append("")
            else:
                plan.append(None)

        known: set[str] = base.addresses() if base is not None else set()
        from_base = set(known)
        reused: set[str] = set()
        lease_key, lease_time = self._open_lease(index_name, base_index)
        ctx = _BackupContext(known, lease_time)
        stats = IndexStats(size=size, chunk_count=n, zero_chunks=0, new_chunks=0, stored_bytes=0, read_bytes=0,
                           seconds=0.0)
        vhash = self.codec.volume_hasher()
        chunks: list[str | None] = []
        done = 0
        pool = self._executor()
        window: deque[tuple[int, Future | tuple]] = deque()
        limit = self.workers * 2

        def settle(item: tuple[int, Future | tuple]) -> None:
            nonlocal done
            i, res = item
            kind, digest, stored, raw_len = res.result() if isinstance(res, Future) else res
            length = min(cs, size - i * cs)
            if kind == "zero":
                stats.zero_chunks += 1
                chunks.append(None)
                vhash.update(self.zero_digest(length))
            else:
                addr = digest.hex()
                chunks.append(addr)
                vhash.update(digest)
                if kind == "new":
                    stats.new_chunks += 1
                    stats.stored_bytes += stored
                    stats.new_bytes += raw_len
                else:
                    stats.reused_chunks += 1
                    reused.add(addr)
            done += length
            if progress is not None:
                progress(done, size)

        try:
            for i, step in enumerate(plan):
                off = i * cs
                length = min(cs, size - off)
                if step is None:
                    data = reader.read(off, length)
                    if len(data) != length:
                        raise BankError(f"short read at {off}: {len(data)} of {length} bytes")
                    stats.read_bytes += length
                    window.append((i, pool.submit(self._put_chunk, data, ctx)))
                elif step == "":
                    window.append((i, ("zero", None, 0, 0)))
                else:
                    window.append((i, ("base", bytes.fromhex(step), 0, 0)))
                while len(window) > limit or (window and not isinstance(window[0][1], Future)):
                    settle(window.popleft())
            while window:
                settle(window.popleft())
            # a garbage collection that overlapped this backup may have removed a chunk found present:
            # re-write every such chunk from the volume before the index makes them referenced
            if reused or from_base:
                self._restore_reused(reader, chunks, reused | ({a for a in chunks if a} & from_base), lease_time,
                                     ctx, stats)
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
            idx = VolumeIndex(name=index_name, size=size, chunk_size=cs, chunks=chunks,
                              volume_hash=vhash.hexdigest(), hash=self.codec.hash_name, created_at=_utcnow_iso(),
                              base_index=base_index, metadata=dict(metadata or {}), stats=asdict(stats))
            self.store.put(index_key(index_name), self.codec.encode_index(index_name, idx.to_json()))
        except BaseException:
            for _i, res in window:
                if isinstance(res, Future):
                    res.cancel()
            for _i, res in window:
                if isinstance(res, Future) and not res.cancelled():
                    try:
                        res.result()
                    except BaseException:  # noqa: BLE001 - the first error is the one raised
                        pass
            raise
        finally:
            try:
                self.store.delete(lease_key)
            except Exception:  # noqa: BLE001 - a left lease only delays GC; it expires
                pass
        stats.seconds = time.monotonic() - started
        return stats

    def _gc_before_lease_running(self, lease_time: float) -> bool:
        """Whether a garbage collection that may have read the leases before this backup's lease existed (its
        marker is not clearly newer than the lease) is still running."""
        now = time.time()
        for info in self.store.list("gc/running/"):
            if self._gc_marker_stale(info.key, info.mtime, now):
                continue
            if info.mtime <= lease_time + LEASE_CLOCK_SLACK:
                return True
            # a running GC renews its marker, so a newer mtime may hide an older start: read when it started
            try:
                doc = json.loads(self.store.get(info.key))
                begun = datetime.fromisoformat(doc["started_at"]).replace(tzinfo=UTC).timestamp()
            except (ObjectNotFound, ValueError, KeyError, TypeError):
                return True
            if begun <= lease_time + LEASE_CLOCK_SLACK:
                return True
        return False

    def _restore_reused(self, reader: BlockReader, chunks: list[str | None], addresses: set[str],
                        lease_time: float, ctx: _BackupContext, stats: IndexStats) -> None:
        """Make sure every chunk this backup did not write itself (dedup hits, chunks of the base index) is in
        the bank before its index is written, whatever garbage collections ran meanwhile.

        Only a GC that read the leases before this backup's lease existed can remove such a chunk (any later one
        keeps them, see docs/bank.md). So, when a GC overlapped the backup: look every such chunk up, write the
        missing ones again from the volume (``reader``; a rewritten chunk is newer than the cutoff of every GC
        running), and repeat until a round starts with no GC running that began before the lease (one still
        running may delete after the look-ups; a later one keeps every chunk of this backup). Raises
        :class:`ChunkMissing` only when the volume no longer holds a chunk's bytes.
        """
        first: dict[str, int] = {}
        for i, addr in enumerate(chunks):
            if addr in addresses and addr not in first:
                first[addr] = i
        while self._gc_overlapped(lease_time):
            # asked before the look-ups: an older GC that ends after this point cannot be missed by them
            older_gc_running = self._gc_before_lease_running(lease_time)
            for addr in sorted(addresses):
                key = chunk_key(addr)
                if self.store.head(key) is not None:
                    continue
                i = first[addr]
                offset = i * self.chunk_size
                data = reader.read(offset, min(self.chunk_size, int(reader.size) - offset))
                digest = self.codec.digest(data)
                if digest.hex() != addr:
                    raise ChunkMissing(key)  # the volume changed under the base index: nothing to rewrite from
                blob = self.codec.encode_chunk(digest, data)
                self.store.put(key, blob, sync=False)
                ctx.new_keys.append(key)
                stats.read_bytes += len(data)
                stats.stored_bytes += len(blob)
                stats.rewritten_chunks += 1
            if not older_gc_running:
                return
            time.sleep(GC_WAIT_SECONDS)

    def _put_chunk(self, data: bytes, ctx: _BackupContext) -> tuple[str, bytes | None, int, int]:
        """Runs in a worker: zero test, hash, existence check, encode, store."""
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
            blob = self.store.get(key)
        except ObjectNotFound:
            raise ChunkMissing(key) from None
        return self.codec.decode_chunk(bytes.fromhex(address), blob, length, name=key)

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
        pool = self._executor()
        window: deque[tuple[int, Future | None]] = deque()
        limit = self.workers * 2
        vhash = self.codec.volume_hasher()
        written = zero = done = 0
        zero_run: list[int] = []  # [start, length] of pending zeros

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
                flush_zeros()
                writer.write(off, data)
                vhash.update(bytes.fromhex(idx.chunks[i]))
                written += length
            done += length
            if progress is not None:
                progress(done, idx.size)

        try:
            for i, addr in enumerate(idx.chunks):
                window.append((i, pool.submit(self._get_chunk, addr, idx.chunk_length(i)) if addr else None))
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

    # --- garbage collection --------------------------------------------------------------------------
    def _live_leases(self, report: GCReport) -> tuple[float | None, set[str]]:
        """Oldest start (backend time) of the backups in flight and the base indexes they build on. Leases
        of crashed backups (too old, or of a dead process on this host) are removed."""
        oldest: float | None = None
        bases: set[str] = set()
        host = socket.gethostname()
        now = time.time()
        for info in list(self.store.list("leases/")):
            try:
                doc = json.loads(self.store.get(info.key))
            except ObjectNotFound:
                continue  # the backup just finished
            except ValueError:
                doc = {}
            stale = info.mtime < now - LEASE_MAX_AGE or (
                doc.get("host") == host and isinstance(doc.get("pid"), int) and not _pid_alive(doc["pid"]))
            if stale:
                report.stale_leases += 1
                self.store.delete(info.key)
                continue
            report.in_flight_backups += 1
            oldest = info.mtime if oldest is None else min(oldest, info.mtime)
            if doc.get("base_index"):
                bases.add(doc["base_index"])
        return oldest, bases

    def gc(self, grace_seconds: float = 3600.0) -> GCReport:
        """Mark and sweep: delete the chunks no index references.

        Safe against backups in flight (here or in other processes): a chunk is only deleted when no index
        references it, no backup in flight builds on an index that references it, and it was last written or
        renewed before the *cutoff* = min(GC start - ``grace_seconds``, start of the oldest backup in flight -
        1 h - 5 min); backups renew reused chunks older than 1 h. A backup that overlapped a GC re-checks its
        reused chunks before writing its index. If an index cannot be read, or a base index of a backup in
        flight has vanished, nothing is swept (``skipped_reason``). Details: ``docs/bank.md``.
        """
        started = time.monotonic()
        report = GCReport()
        self._drop_stale_gc_markers(report)
        marker = f"gc/running/{uuid.uuid4().hex}"
        marker_doc = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started_at": _utcnow_iso(),
                                 "lease_seconds": GC_MARKER_LEASE}).encode()
        self.store.put(marker, marker_doc, sync=False)
        renewed = time.monotonic()

        def renew() -> None:  # keeps the marker from looking stale while this GC runs
            nonlocal renewed
            if time.monotonic() - renewed >= GC_MARKER_RENEW:
                self.store.put(marker, marker_doc, sync=False)
                renewed = time.monotonic()

        try:
            info = self.store.head(marker)
            t0 = info.mtime if info else time.time()
            # order matters: leases first, then indexes (a backup ends by writing its index, then its lease goes)
            oldest, bases = self._live_leases(report)
            marked: set[str] = set()
            for name in self.list_indexes():
                renew()
                try:
                    marked |= self.read_index(name).addresses()
                    report.indexes += 1
                except IndexNotFound:
                    continue  # deleted meanwhile
                except ChunkDamaged as exc:
                    report.errors.append(str(exc))
                    report.skipped_reason = f"index {name} cannot be read"
            for name in bases:
                try:
                    marked |= self.read_index(name).addresses()
                except (IndexNotFound, ChunkDamaged):
                    report.skipped_reason = f"base index {name} of a backup in flight is gone"
            report.referenced_chunks = len(marked)
            cutoff = t0 - max(0.0, grace_seconds)
            if oldest is not None:
                cutoff = min(cutoff, oldest - TOUCH_AGE - SAFETY)
            report.cutoff = cutoff
            if report.skipped_reason is None:
                self._sweep(marked, cutoff, report, renew)
                report.temporary_removed = self.store.cleanup_temporary(min(cutoff, time.time() - SAFETY))
        finally:
            self.store.put("gc/finished", json.dumps({
                "finished_at": _utcnow_iso(), "deleted_chunks": report.deleted_chunks,
                "freed_bytes": report.freed_bytes, "reclaimable_bytes": report.reclaimable_bytes,
                "skipped_reason": report.skipped_reason}).encode(), sync=False)
            self.store.delete(marker)
        report.seconds = time.monotonic() - started
        return report

    def _sweep(self, marked: set[str], cutoff: float, report: GCReport,
               renew: Callable[[], None] = lambda: None) -> None:
        for info in self.store.list("chunks/"):
            renew()
            addr = info.key.rsplit("/", 1)[-1]
            report.chunks_seen += 1
            if addr in marked:
                continue
            if info.mtime >= cutoff:
                report.kept_recent += 1
                report.reclaimable_bytes += info.size
                continue
            fresh = self.store.head(info.key)  # renewed since it was listed?
            if fresh is None:
                continue
            if fresh.mtime >= cutoff:
                report.kept_recent += 1
                report.reclaimable_bytes += fresh.size
                continue
            self.store.delete(info.key)
            report.deleted_chunks += 1
            report.freed_bytes += fresh.size

    # --- verify --------------------------------------------------------------------------------------
    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Re-read every index and every chunk: decrypt, decompress and check each chunk against its address,
        each index's ``volume_hash`` against its chunk list; report damaged and missing objects.
        ``progress(chunks_done, chunks_total)``. Never raises for damage (only for backend failures)."""
        started = time.monotonic()
        report = VerifyReport()
        referenced: dict[str, list[str]] = {}
        for name in self.list_indexes():
            try:
                idx = self.read_index(name)
            except (ChunkDamaged, IndexNotFound) as exc:
                report.damaged_indexes.append((name, getattr(exc, "reason", str(exc))))
                continue
            report.indexes_checked += 1
            h = self.codec.volume_hasher()
            for i, addr in enumerate(idx.chunks):
                if addr is None:
                    h.update(self.zero_digest(idx.chunk_length(i)))
                else:
                    h.update(bytes.fromhex(addr))
                    referenced.setdefault(addr, []).append(name)
            if h.hexdigest() != idx.volume_hash:
                report.damaged_indexes.append((name, "volume hash does not match the chunk list"))
        present = [info for info in self.store.list("chunks/")]
        present_addrs = {info.key.rsplit("/", 1)[-1] for info in present}
        for addr in sorted(set(referenced) - present_addrs):
            report.missing_chunks.append((addr, sorted(set(referenced[addr]))))
        report.unreferenced_chunks = len(present_addrs - set(referenced))

        def check(key: str) -> tuple[str, int, str | None]:
            addr = key.rsplit("/", 1)[-1]
            if not _ADDR_RE.match(addr) or key != chunk_key(addr):
                return key, 0, "not a chunk name"
            try:
                data = self.codec.decode_chunk(bytes.fromhex(addr), self.store.get(key), None, name=key)
            except ObjectNotFound:
                return key, 0, "vanished while verifying"
            except ChunkDamaged as exc:
                return key, 0, exc.reason
            return key, len(data), None

        pool = self._executor()
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
            if progress is not None:
                progress(report.chunks_checked, total)

        for info in present:
            window.append(pool.submit(check, info.key))
            while len(window) > self.workers * 2:
                settle(window.popleft())
        while window:
            settle(window.popleft())
        report.seconds = time.monotonic() - started
        return report
