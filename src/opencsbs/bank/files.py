"""File-backed :class:`~opencsbs.core.blocks.BlockReader` and :class:`~opencsbs.core.blocks.BlockWriter`.

Used on sandbox volume files, raw disk images and block devices. Offsets and lengths are bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat

from opencsbs.bank._writeback import start_writeback
from opencsbs.blockio import DirectWriter
from opencsbs.core.blocks import Range

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZERO_BLOCK = bytes(4 << 20)
_WRITEBACK_MIN = 1 << 20

try:  # fallocate(2) with PUNCH_HOLE is not in the os module
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate = _libc.fallocate
except (OSError, AttributeError):  # pragma: no cover - non-glibc platforms
    _fallocate = None


def _device_size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)


class FileBlockReader:
    """Reads a file or block device. ``allocated_ranges()`` uses ``SEEK_DATA``/``SEEK_HOLE`` on regular files
    (holes need not be read); ``None`` where the filesystem cannot tell."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self.size = _device_size(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        data = os.pread(self._fd, length, offset)
        if len(data) < length:  # short reads happen on some devices: finish the job
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self._fd, length - got, offset + got)
                if not more:
                    raise OSError(errno.EIO, f"{self.path}: unexpected end at {offset + got}")
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def allocated_ranges(self) -> list[Range] | None:
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            return None
        ranges: list[Range] = []
        pos = 0
        try:
            while pos < self.size:
                try:
                    start = os.lseek(self._fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole remains
                        break
                    raise
                end = os.lseek(self._fd, start, os.SEEK_HOLE)
                end = min(end, self.size)
                if end > start:
                    ranges.append((start, end - start))
                pos = end
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return None
            raise
        return ranges

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileBlockWriter:
    """Writes a file (made ``size`` bytes long, sparse) or a block device.

    ``truncate=True`` (default for regular files) empties the file first, so untouched ranges read as zeros
    without being written. ``write_zeroes`` punches holes in regular files (falls back to writing zeros).
    ``direct=True`` (default) writes aligned blocks with ``O_DIRECT`` where the filesystem allows it
    (:class:`opencsbs.blockio.DirectWriter`), bypassing the page cache; the rest goes through it.
    """

    def __init__(self, path: str | os.PathLike, size: int, truncate: bool = True, direct: bool = True):
        self.path = os.fspath(path)
        self.size = size
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        st = os.fstat(self._fd)
        self._regular = stat.S_ISREG(st.st_mode)
        self._fresh = False
        if self._regular:
            if truncate:
                os.ftruncate(self._fd, 0)
                self._fresh = True
            os.ftruncate(self._fd, size)
        elif _device_size(self._fd) < size:
            os.close(self._fd)
            raise OSError(errno.ENOSPC, f"{self.path} is smaller than {size} bytes")
        self._high = 0  # end of the furthest write: beyond it a fresh file is still all holes
        self._direct = DirectWriter(self.path, enabled=direct)

    def write(self, offset: int, data: bytes) -> None:
        if self._direct.pwrite(data, offset):
            self._high = max(self._high, offset + len(data))
            return
        view = memoryview(data)
        pos = offset
        while view:
            n = os.pwrite(self._fd, view, pos)
            view = view[n:]
            pos += n
        self._high = max(self._high, pos)
        if len(data) >= _WRITEBACK_MIN:
            start_writeback(self._fd, offset, len(data))  # overlap disk writes with the rest of the restore

    def write_zeroes(self, offset: int, length: int) -> None:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return
        if self._fresh and offset >= self._high:
            return  # a freshly truncated file already reads as zeros there
        if self._regular and _fallocate is not None:
            if _fallocate(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
                return
        pos, end = offset, offset + length
        while pos < end:
            n = min(len(_ZERO_BLOCK), end - pos)
            self.write(pos, _ZERO_BLOCK[:n])
            pos += n

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        self._direct.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBlockWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
