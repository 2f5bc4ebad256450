"""Read pacing of a backup (``engine.read_limit_mib_s``): a :class:`~opencsbs.core.blocks.BlockReader` wrapper that
keeps the reads of one disk snapshot at or below a rate, so a backup window leaves the production storage its
bandwidth (docs/engine.md).

The pace is kept by sleeping, never by reading less: after ``n`` bytes the reader has taken at least
``n / rate`` seconds since it was opened. Thread-safe (the bank may read one snapshot from several threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from opencsbs.core.blocks import BlockReader, Range

MIB = 1024 * 1024


class PacedReader:
    """``reader`` read at most ``mib_per_s`` MiB per second (> 0) on average since it was opened."""

    def __init__(self, reader: BlockReader, mib_per_s: float):
        if mib_per_s <= 0:
            raise ValueError("mib_per_s must be > 0")
        self._reader = reader
        self._rate = mib_per_s * MIB  # bytes per second
        self._lock = threading.Lock()
        self._bytes = 0
        self._started = time.monotonic()
        self.size = reader.size

    def read(self, offset: int, length: int) -> bytes:
        data = self._reader.read(offset, length)
        with self._lock:
            self._bytes += len(data)
            due = self._started + self._bytes / self._rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return data

    def allocated_ranges(self) -> Sequence[Range] | None:
        return self._reader.allocated_ranges()

    def close(self) -> None:
        self._reader.close()

    def __getattr__(self, name: str):  # other capabilities of the wrapped reader (e.g. a file descriptor)
        return getattr(self._reader, name)


def paced(reader: BlockReader, mib_per_s: float) -> BlockReader:
    """``reader`` itself when ``mib_per_s`` is 0 (unlimited), else a :class:`PacedReader` of it."""
    return reader if mib_per_s <= 0 else PacedReader(reader, mib_per_s)
