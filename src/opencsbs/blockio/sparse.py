"""Sparse-file primitives shared by everything that holds disk bytes in local files (sandbox volumes, libvirt
scratch copies and raw disk images, restore targets, the bank's local folder): allocated extents
(``SEEK_DATA``/``SEEK_HOLE``), hole punching (``fallocate(FALLOC_FL_PUNCH_HOLE)``, Linux), range arithmetic,
the two writes every file-backed :class:`~opencsbs.core.blocks.BlockWriter` needs, and early writeback
(``sync_file_range(2)``). Offsets and lengths are in bytes."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable

from opencsbs.core.blocks import Range

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_SYNC_FILE_RANGE_WRITE = 2


def _libc_function(name: str, argtypes: list) -> Callable[..., int] | None:
    """glibc's function ``name`` (not in the ``os`` module), or None where the platform lacks it."""
    try:
        fn = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
        return None
    fn.argtypes = argtypes
    return fn


_fallocate = _libc_function("fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])
_sfr = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint])


def data_extents(fd: int, size: int) -> list[Range]:
    """The allocated ``(offset, length)`` extents of an open file up to ``size`` (SEEK_DATA/SEEK_HOLE)."""
    extents: list[Range] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        pos = end
    return extents


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range so it reads as zeros; False when the filesystem (or platform) cannot."""
    if _fallocate is None:
        return False
    return _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0


def merge_ranges(ranges: list[Range]) -> list[Range]:
    """Sorted, non-overlapping union of ``ranges``."""
    merged: list[list[int]] = []
    for off, length in sorted(ranges):
        if length <= 0:
            continue
        if merged and off <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], off + length - merged[-1][0])
        else:
            merged.append([off, length])
    return [(o, n) for o, n in merged]


_ZERO_BLOCK = bytes(4 * 1024 * 1024)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make ``length`` bytes at ``offset`` read as zeros: a punched hole where the filesystem can, else zero
    bytes written (block devices, filesystems without hole punching)."""
    if length <= 0 or punch_hole(fd, offset, length):
        return
    end = offset + length
    while offset < end:
        n = min(len(_ZERO_BLOCK), end - offset)
        pwrite_all(fd, _ZERO_BLOCK[:n], offset)
        offset += n


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to begin writing ``length`` bytes at ``offset`` (0: to the end) of ``fd`` to disk, without
    waiting (``sync_file_range`` with ``SYNC_FILE_RANGE_WRITE``), so that the ``fsync`` that makes a backup or a
    restore durable finds the data already (mostly) on disk instead of writing gigabytes at the end. A no-op
    where the call is missing."""
    if _sfr is not None:
        _sfr(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
