"""The bank: where backup data lives (content-addressed 4 MiB chunks, zstd, optional AES-256-GCM, one index
per volume backup) on a local folder or an S3 bucket. See ``docs/bank.md``.

>>> from opencsbs.blockio.files import FileBlockReader, FileBlockWriter
>>> bank = open_bank(settings)
>>> stats = bank.backup_volume(FileBlockReader("disk.img"), "checkpoints/<id>/<volume_backup_id>")
>>> bank.restore_volume("checkpoints/<id>/<volume_backup_id>", FileBlockWriter("out.img", stats.size))
"""

from __future__ import annotations

from opencsbs.bank.backends import LocalStore, ObjectStore, S3Store
from opencsbs.bank.codec import Codec, load_key
from opencsbs.bank.errors import (
    BankConfigError,
    BankError,
    BankKeyError,
    ChunkDamaged,
    ChunkMissing,
    IndexNotFound,
    ObjectNotFound,
)
from opencsbs.bank.bank import Bank, IndexStats, RestoreStats
from opencsbs.bank.gc import GCReport, collect_garbage
from opencsbs.bank.layout import CHUNK_SIZE, VolumeIndex
from opencsbs.bank.verify import VerifyReport, verify_bank

__all__ = [
    "CHUNK_SIZE", "Bank", "BankConfigError", "BankError", "BankKeyError", "ChunkDamaged", "ChunkMissing",
    "Codec", "GCReport", "IndexNotFound", "IndexStats", "LocalStore",
    "ObjectNotFound", "ObjectStore", "RestoreStats", "S3Store", "VerifyReport", "VolumeIndex", "collect_garbage",
    "load_key", "open_bank", "verify_bank",
]


def open_bank(settings, replica: str | None = None) -> Bank:
    """The bank described by ``settings`` (:class:`opencsbs.config.Settings`): ``settings.bank.backend``
    ``local`` (folder ``settings.bank_path``) or ``s3``; encryption when ``bank.encryption_key_file`` is set.

    ``replica``: open the second bank of that name (``settings.replicas``, docs/replication.md) instead.
    Raises :class:`BankConfigError` (bad settings, unknown replica) or :class:`BankKeyError` (key does not fit
    the bank).
    """
    b = settings.bank
    path = settings.bank_path
    if replica is not None:
        b = settings.replica(replica)
        if b is None:
            raise BankConfigError(f"no replica named {replica!r} in the settings")
        path = b.path
    key = load_key(b.encryption_key_file) if b.encryption_key_file else None
    codec = Codec(key, level=b.compression_level)
    if b.backend == "s3":
        store: ObjectStore = S3Store(b.s3_endpoint, b.s3_bucket, b.s3_access_key, b.s3_secret_key,
                                     region=b.s3_region, prefix=b.s3_prefix,
                                     max_connections=max(16, b.threads * 4), object_lock=b.s3_object_lock)
        bank = Bank(store, codec, threads=b.threads, io_bound=True)
    else:
        bank = Bank(LocalStore(path, fsync=b.fsync), codec, threads=b.threads)
    if replica is None:
        names = [r.name for r in getattr(settings, "replicas", []) if r.restore_fallback]
        if names:
            bank.fallback_opener = lambda: _open_fallbacks(settings, names)
    return bank


def _open_fallbacks(settings, names: list[str]) -> list[Bank]:
    """The replicas ``names`` a restore may read from; one that cannot be opened is left out (logged)."""
    import logging

    banks = []
    for name in names:
        try:
            banks.append(open_bank(settings, name))
        except Exception as exc:  # noqa: BLE001 - an unreachable replica only means no fallback
            logging.getLogger("opencsbs.bank").warning("replica %s cannot be opened: %s", name,
                                                       type(exc).__name__)
    return banks
