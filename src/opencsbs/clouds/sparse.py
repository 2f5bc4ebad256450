"""Sparse-file primitives shared by drivers that hold disk bytes in local files (sandbox volumes, libvirt
scratch copies and raw disk images): allocated extents (``SEEK_DATA``/``SEEK_HOLE``), hole punching
(``fallocate(FALLOC_FL_PUNCH_HOLE)``, Linux) range arithmetic, and the two writes every file-backed :class:`~opencsbs.core.blocks.BlockWriter` needs. Offsets and
lengths are in bytes."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from opencsbs.core.blocks import Range

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


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
    """Deallocate a range so it reads as zeros; False when the filesystem cannot."""
    res = _libc.fallocate(ctypes.c_int(fd), ctypes.c_int(_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE),
                          ctypes.c_longlong(offset), ctypes.c_longlong(length))
    return res == 0


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
