"""Block-device access shapes shared by cloud drivers (which provide them) and the bank (which consumes them).

Pure typing: no I/O here. Offsets and lengths are in bytes.

- A :class:`BlockReader` reads a snapshot of one volume. ``allocated_ranges()`` may tell which ranges can hold
  data (holes read as zeros and need not be read); ``None`` means "read everything".
  A reader may also have a ``verify()`` method (not part of the protocol): the bank calls it once everything
  was read, before it records the backup, and it raises when the data read cannot be trusted (e.g. an RBD
  snapshot deleted during the copy, whose reads return zeros).
- A :class:`BlockWriter` writes a volume during restore. ``write_zeroes`` lets a writer punch holes or skip
  (sparse targets) instead of writing zero bytes.

The engine passes changed ranges (from the driver, e.g. libvirt dirty bitmaps) separately to the bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

#: ``(offset, length)`` in bytes
Range = tuple[int, int]


@runtime_checkable
class BlockReader(Protocol):
    """Reads a volume snapshot of ``size`` bytes."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (shorter only at the end of the volume)."""
        ...

    def allocated_ranges(self) -> Sequence[Range] | None:
        """Ranges that may hold non-zero data, sorted; ``None`` when unknown (everything is read)."""
        ...

    def close(self) -> None:
        """Release the snapshot handle."""
        ...


@runtime_checkable
class BlockWriter(Protocol):
    """Writes a volume of ``size`` bytes during a restore."""

    size: int

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``."""
        ...

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make ``length`` bytes at ``offset`` read as zeros (may punch a hole)."""
        ...

    def flush(self) -> None:
        """Make everything written durable."""
        ...

    def close(self) -> None:
        """Release the target."""
        ...
