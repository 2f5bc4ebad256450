"""The file-backed :class:`~opencsbs.core.blocks.BlockReader` and :class:`~opencsbs.core.blocks.BlockWriter`:
regular files (raw disk images, scratch copies, restore targets, sandbox volumes) and block devices.

Used by the libvirt driver (raw images and ``qemu-img`` scratch files), the sandbox (through
:class:`~opencsbs.clouds.sandbox.volumes.VolumeWriter`), the tests and the benchmarks. Offsets and lengths are
bytes; every call works on a bounded buffer, a disk is never held in memory.

>>> with FileBlockReader("disk.img") as r:
...     bank.backup_volume(r, "checkpoints/<id>/<volume_backup_id>")
>>> with FileBlockWriter("out.img", size) as w:
...     bank.restore_volume("checkpoints/<id>/<volume_backup_id>", w)
"""

from __future__ import annotations

import errno
import os
import stat

from opencsbs.blockio.direct import DirectWriter
from opencsbs.blockio.sparse import data_extents, pwrite_all, start_writeback, zero_range
from opencsbs.core.blocks import Range

#: buffered writes at least this large start the kernel's writeback at once
_WRITEBACK_MIN = 1 << 20


def _device_size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)


class FileBlockReader:
    """Reads a file or block device.

    ``size``: the bytes to expose; by default the file's (or device's) size. When given, a file shorter than
    ``size`` reads as zeros past its end (a raw image whose tail is a hole ``qemu-img`` did not write); when not,
    such a short file raises ``OSError(EIO)``. ``allocated_ranges()`` uses ``SEEK_DATA``/``SEEK_HOLE`` on
    regular files (holes need not be read); ``None`` for devices and where the filesystem cannot tell.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._pad = size is not None
        self.size = size if size is not None else _device_size(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        data = os.pread(self._fd, length, offset)
        if len(data) < length:  # short reads happen on some devices: finish the job
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(self._fd, length - got, offset + got)
                if not more:
                    if not self._pad:
                        raise OSError(errno.EIO, f"{self.path}: unexpected end at {offset + got}")
                    parts.append(bytes(length - got))
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def allocated_ranges(self) -> list[Range] | None:
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            return None
        try:
            return data_extents(self._fd, self.size)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return None
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileBlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileBlockWriter:
    """Writes a file or a block device of ``size`` bytes.

    ``create=True`` (default) creates a missing file with ``mode``; ``create=False`` writes an existing file or
    device in place. ``truncate=True`` (default) empties a regular file first and makes it ``size`` bytes long
    (sparse), so untouched ranges read as zeros without being written; ``truncate=False`` keeps its bytes and
    size. ``write_zeroes`` punches holes where the filesystem (or device) can, else writes zeros. ``direct=True``
    (default) writes aligned blocks with ``O_DIRECT`` where the filesystem allows it
    (:class:`opencsbs.blockio.direct.DirectWriter`), bypassing the page cache; the rest goes through it.

    Raises ``OSError(ENOSPC)`` for a block device smaller than ``size``, ``ValueError`` for a write past
    ``size``.
    """

    def __init__(self, path: str | os.PathLike, size: int, truncate: bool = True, direct: bool = True, *,
                 create: bool = True, mode: int = 0o640):
        self.path = os.fspath(path)
        self.size = size
        self._fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), mode)
        st = os.fstat(self._fd)
        self._regular = stat.S_ISREG(st.st_mode)
        self._fresh = False
        if self._regular:
            if truncate:
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, size)
                self._fresh = True
        elif _device_size(self._fd) < size:
            os.close(self._fd)
            raise OSError(errno.ENOSPC, f"{self.path} is smaller than {size} bytes")
        self._high = 0  # end of the furthest write: beyond it a fresh file is still all holes
        self._direct = DirectWriter(self.path, enabled=direct)

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.size:
            raise ValueError(f"write past the end of {os.path.basename(self.path)} ({self.size} bytes)")
        self._high = max(self._high, offset + len(data))
        if self._direct.pwrite(data, offset):
            return
        pwrite_all(self._fd, data, offset)
        if len(data) >= _WRITEBACK_MIN:
            start_writeback(self._fd, offset, len(data))  # overlap disk writes with the rest of the restore

    def write_zeroes(self, offset: int, length: int) -> None:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return
        if self._fresh and offset >= self._high:
            return  # a freshly truncated file already reads as zeros there
        zero_range(self._fd, offset, length)

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
