"""The bank's layout: object keys, the index format and the time margins of the garbage-collection protocol
(see ``docs/bank.md``).

Layout of the objects in a backend (local folder or S3 bucket)::

    bank.json                         format, chunk size, hash, encryption key identifier
    chunks/<aa>/<address>             one chunk (envelope, see :mod:`opencsbs.bank.codec`)
    indexes/<index name>.idx          one volume backup: one entry per region (a chunk address, zeros, or pieces:
                                      slices of chunks), size, hashes, metadata
    leases/<id>.json                  a backup (or a copy to this bank) in flight (protects its chunks from GC)
    catalog/<checkpoint_item id>.json a backup's catalog record (:mod:`opencsbs.bank.catalog`)
    gc/running/<id>, gc/finished      garbage collections in progress / the end of the last one (its figures)
    verify/finished                   the end of the last whole-bank verify (its figures)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from opencsbs.bank.errors import BankError

#: fixed chunk size for disk images (bytes)
CHUNK_SIZE = 4 << 20
#: the bank's format (``bank.json``): 1 = every index entry is a whole chunk; 2 = index entries may also be
#: pieces (slices of chunks). A format-1 bank is raised to 2 when it first gets an index with pieces.
BANK_FORMAT = 2
#: index formats: 1 = whole chunks only (what format-1 banks hold), 2 = may hold pieces
FORMAT = 1
FORMAT_PIECES = 2
#: an incremental stores changed bytes in extents aligned to this (QEMU's dirty-bitmap granularity)
EXTENT_ALIGN = 64 << 10
#: a region whose pieces would reference more chunks than this, or be more pieces than :data:`MAX_PIECES`, is
#: read and stored whole again (bounds the chunks a restore fetches per region)
MAX_PIECE_CHUNKS = 8
MAX_PIECES = 64
#: the changed extents of consecutive regions are stored together in chunks of at most this many bytes
#: ("packs"; fewer objects to write and sync than one per region)
PACK_SIZE = 1 << 20
#: a backup that reuses a chunk older than this (seconds, relative to its start) renews the chunk's mtime
TOUCH_AGE = 3600.0
#: extra margin (seconds) for clock resolution (S3 LastModified has 1 s) and slow calls
SAFETY = 300.0
#: a lease older than this (seconds) is treated as left behind by a crashed backup
LEASE_MAX_AGE = 2 * 86400.0
#: a GC marker older than this is treated as left behind by a crashed GC
GC_MARKER_MAX_AGE = 86400.0
#: a running GC renews its ``gc/running/<id>`` marker at least this often (seconds); a marker not renewed for
#: :data:`GC_MARKER_LEASE`, or naming a dead process of this host, is stale (left by a killed GC)
GC_MARKER_RENEW = 60.0
GC_MARKER_LEASE = 600.0
#: a GC marker not newer than a lease by this much (seconds; S3 LastModified has whole seconds) may have been
#: written before the GC read the leases without seeing that lease
LEASE_CLOCK_SLACK = 2.0

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
ADDR_RE = re.compile(r"^[0-9a-f]{64}$")


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


def utcnow_iso() -> str:
    """The current UTC time as naive ISO 8601 with microseconds (the timestamps inside leases, markers and
    indexes)."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


#: one piece of a region: ``[address or None (zeros), offset in the chunk, length, length of the whole chunk]``
Piece = list


def pieces_digest_input(pieces: list[Piece]) -> bytes:
    """The bytes whose digest stands for a region made of ``pieces`` in the volume hash."""
    return b"opencsbs pieces v2\n" + json.dumps(pieces, separators=(",", ":")).encode()


def _check_pieces(pieces: Any, length: int) -> None:
    if not isinstance(pieces, list) or not pieces:
        raise ValueError("an entry is neither an address, null nor a list of pieces")
    total = 0
    for p in pieces:
        if not isinstance(p, list) or len(p) != 4 or not all(isinstance(x, int) for x in p[1:]):
            raise ValueError(f"bad piece {p!r}")
        addr, off, n, whole = p
        if n <= 0 or off < 0 or (addr is not None and (not isinstance(addr, str) or not ADDR_RE.match(addr)
                                                          or off + n > whole)):
            raise ValueError(f"bad piece {p!r}")
        total += n
    if total != length:
        raise ValueError("pieces do not cover their region")


@dataclass
class VolumeIndex:
    """One volume backup as stored in the bank.

    ``chunks``: one entry per region of ``chunk_size`` bytes in volume order (the last one may be shorter):
    a hex chunk address (the region is that whole chunk), ``None`` (all zeros), or, in index format 2, a list of
    pieces ``[address or None, offset, length, chunk length]`` that together cover the region (slices of chunks,
    ``None`` for zeros; see docs/bank.md). ``volume_hash``: BLAKE3 (keyed when encrypted) over one digest per
    region in order: the chunk's address, the digest of its zero bytes, or the digest of
    :func:`pieces_digest_input`; checked by every restore. Every index is complete on its own: a restore never
    needs another index."""

    name: str
    size: int
    chunk_size: int
    chunks: list[str | None | list[Piece]]
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
        """The distinct chunk addresses the index references (whole or in pieces)."""
        return set(self.chunk_lengths())

    def chunk_lengths(self) -> dict[str, int]:
        """Address → plaintext length of every chunk the index references, in order of first use."""
        out: dict[str, int] = {}
        for i, entry in enumerate(self.chunks):
            if isinstance(entry, str):
                out.setdefault(entry, self.chunk_length(i))
            elif entry:
                for addr, _off, _n, whole in entry:
                    if addr:
                        out.setdefault(addr, whole)
        return out

    def pieces(self, i: int) -> list[Piece]:
        """Region ``i`` as pieces (a whole chunk or zeros as one piece)."""
        return self.entry_pieces(self.chunks[i], self.chunk_length(i))

    @staticmethod
    def entry_pieces(entry: str | None | list[Piece], length: int) -> list[Piece]:
        """An entry of a region of ``length`` bytes as pieces."""
        if entry is None:
            return [[None, 0, length, 0]]
        if isinstance(entry, str):
            return [[entry, 0, length, length]]
        return [list(p) for p in entry]

    @property
    def has_pieces(self) -> bool:
        return any(isinstance(e, list) for e in self.chunks)

    def chunk_length(self, i: int) -> int:
        """Length in bytes of chunk ``i``."""
        return min(self.chunk_size, self.size - i * self.chunk_size)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT_PIECES if self.has_pieces else FORMAT,
               **{f.name: getattr(self, f.name) for f in fields(self)}}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> VolumeIndex:
        doc = json.loads(raw)
        fmt = doc.pop("format", None)
        if fmt not in (FORMAT, FORMAT_PIECES):
            raise ValueError("unknown index format")
        idx = cls(**doc)
        n = -(-idx.size // idx.chunk_size) if idx.size else 0
        if len(idx.chunks) != n:
            raise ValueError("chunk list does not match the size")
        for i, entry in enumerate(idx.chunks):
            if entry is None or (isinstance(entry, str) and ADDR_RE.match(entry)):
                continue
            if fmt == FORMAT:
                raise ValueError("chunk list does not match the size")
            _check_pieces(entry, idx.chunk_length(i))
        return idx



def read_record(store, key: str) -> dict[str, Any] | None:
    """The JSON record at ``key`` (``gc/finished``, ``verify/finished``) with its object time as ``mtime``
    (POSIX seconds), or None when there is none or it does not parse."""
    info = store.head(key)
    if info is None:
        return None
    try:
        doc = json.loads(store.get(key))
    except Exception:  # noqa: BLE001 - vanished or half-written: as if there were none
        return None
    return {**doc, "mtime": info.mtime} if isinstance(doc, dict) else None


def region_extents(ranges: Any, chunk_size: int, size: int, align: int = EXTENT_ALIGN) -> dict[int, list[list[int]]]:
    """Region number → the changed extents ``[start, end)`` inside it (offsets relative to the region), widened
    to ``align`` (clipped to the region and the volume), merged and sorted. ``ranges``: ``(offset, length)``
    byte ranges of the volume."""
    out: dict[int, list[list[int]]] = {}
    for off, length in ranges:
        if length <= 0 or off >= size:
            continue
        end = min(size, off + length)
        off = max(0, off)
        start, stop = off // align * align, min(size, -(-end // align) * align)
        pos = start
        while pos < stop:
            i = pos // chunk_size
            base = i * chunk_size
            upto = min(stop, base + chunk_size)
            out.setdefault(i, []).append([pos - base, upto - base])
            pos = upto
    for i, extents in out.items():
        extents.sort()
        merged: list[list[int]] = []
        for s, e in extents:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out[i] = merged
    return out


def overlay_pieces(base: list[Piece], extents: list[list[int]], pack: str | None, pack_len: int,
                   pack_start: int = 0) -> list[Piece]:
    """The pieces of a region whose old content is ``base`` (pieces covering it) and whose ``extents``
    (``[start, end)``, sorted, disjoint) now come, one after the other, from the chunk ``pack`` of ``pack_len``
    bytes from its offset ``pack_start`` on (the changed extents concatenated; ``None``: they are zeros).
    Adjacent pieces continuing each other are merged."""
    spans = []
    pos = 0
    for p in base:
        spans.append((pos, p))
        pos += p[2]
    out: list[Piece] = []

    def emit(piece: Piece) -> None:
        if out:
            last = out[-1]
            if last[0] == piece[0] and (last[0] is None or (last[1] + last[2] == piece[1] and last[3] == piece[3])):
                last[2] += piece[2]
                return
        out.append(piece)

    def old(s: int, e: int) -> None:
        for ps, (addr, coff, n, whole) in spans:
            lo, hi = max(s, ps), min(e, ps + n)
            if lo < hi:
                emit([addr, coff + (lo - ps) if addr else 0, hi - lo, whole])

    pos, pack_off = 0, pack_start
    for s, e in extents:
        old(pos, s)
        emit([pack, pack_off, e - s, pack_len] if pack else [None, 0, e - s, 0])
        pack_off += e - s
        pos = e
    old(pos, sum(p[2] for p in base))
    return out
