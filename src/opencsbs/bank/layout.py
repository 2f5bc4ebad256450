"""The bank's layout: object keys, the index format and the time margins of the garbage-collection protocol
(see ``docs/bank.md``).

Layout of the objects in a backend (local folder or S3 bucket)::

    bank.json                         format, chunk size, hash, encryption key identifier
    chunks/<aa>/<address>             one chunk (envelope, see :mod:`opencsbs.bank.codec`)
    indexes/<index name>.idx          one volume backup: ordered chunk addresses, size, hashes, metadata
    leases/<id>.json                  a backup (or a copy to this bank) in flight (protects its chunks from GC)
    catalog/<checkpoint_item id>.json a backup's catalog record (:mod:`opencsbs.bank.catalog`)
    gc/running/<id>, gc/finished      garbage collections in progress / the end of the last one
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from opencsbs.bank.errors import BankError

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
        if len(idx.chunks) != n or any(a is not None and not ADDR_RE.match(a) for a in idx.chunks):
            raise ValueError("chunk list does not match the size")
        return idx

