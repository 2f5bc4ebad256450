"""Start the kernel's writeback of a file range without waiting (``sync_file_range(2)`` with
``SYNC_FILE_RANGE_WRITE``), so that the ``fsync`` that makes a backup or restore durable finds the data already
(mostly) on disk instead of writing gigabytes at the end. A no-op where the call is missing."""

from __future__ import annotations

import ctypes
import ctypes.util

_SYNC_FILE_RANGE_WRITE = 2

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _sfr = _libc.sync_file_range
    _sfr.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _sfr = None


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to begin writing ``length`` bytes at ``offset`` (0: to the end) of ``fd`` to disk."""
    if _sfr is not None:
        _sfr(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
