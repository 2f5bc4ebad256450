"""The face of the bank the engine uses: back a volume up, restore it, drop a backup's index.

:class:`VolumeStore` is what a job step needs of a bank, and no more (restic's ``BlobSaver``/``Loader`` idea):
:class:`opencsbs.bank.Bank` implements it (``Bank.backup_volume``, ``Bank.restore_volume``,
``Bank.check_volume``, ``Bank.delete_index``). Offsets and sizes are in bytes; ``progress(bytes_done, bytes_total)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from opencsbs.core.blocks import BlockReader, BlockWriter, Range

if TYPE_CHECKING:  # the bank's figures, for the signatures only
    from opencsbs.bank import IndexStats, RestoreStats


class VolumeStore(Protocol):
    """Where the engine puts and gets volume backups, one index per volume backup
    (``checkpoints/<checkpoint_id>/<volume_backup_id>``)."""

    def backup_volume(self, reader: BlockReader, index_name: str, base_index: str | None = None,
                      changed_ranges: Sequence[Range] | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      metadata: dict[str, Any] | None = None,
                      on_stored: Callable[[int], None] | None = None) -> IndexStats:
        """Copy the volume ``reader`` reads into the index ``index_name``; with ``base_index`` (and optionally
        ``changed_ranges``) incrementally. ``on_stored(stored_bytes)``: this call's bytes written to the store so
        far, each time they grow, also while a call cut short by an exception winds down (the engine persists it
        so a resumed backup counts what an interrupted attempt stored). Raises ``BankError`` (``ChunkMissing``,
        ``IndexNotFound``)."""
        ...

    def restore_volume(self, index_name: str, writer: BlockWriter,
                       progress: Callable[[int, int], None] | None = None) -> RestoreStats:
        """Write the volume backup ``index_name`` onto ``writer``, byte-exact. Raises ``IndexNotFound``,
        ``ChunkMissing``, ``ChunkDamaged``, ``BankError``."""
        ...

    def check_volume(self, index_name: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Check that every chunk of ``index_name`` is present and intact (hash-checked), writing nothing; the
        number of chunks checked. Raises ``IndexNotFound``, ``ChunkMissing``, ``ChunkDamaged``, ``BankError``."""
        ...

    def retain_index(self, index_name: str, mode: str, until: datetime) -> int:
        """Have the storage keep ``index_name`` and its chunks until ``until`` (S3 Object Lock, ``mode``
        GOVERNANCE|COMPLIANCE); the number of objects retained, 0 where the store enforces no retention."""
        ...

    def delete_index(self, index_name: str) -> None:
        """Drop the index ``index_name`` (its chunks go at the next GC); an absent index is ignored."""
        ...
