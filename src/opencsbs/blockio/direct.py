"""Direct (``O_DIRECT``) writes for data written once and not read back soon: restore targets (volume files, raw
disk images, block devices) and the bank's new chunks in a local folder.

Going through the page cache only costs there: every 4 KiB page must be allocated, filled, written back and then
reclaimed, and on virtual machines the allocation alone can halve the throughput (see docs/performance.md).
:class:`DirectWriter` writes aligned blocks straight to the device through a second descriptor opened with
``O_DIRECT``, copying each block into a page-aligned buffer first (``O_DIRECT`` needs aligned memory, offsets and
lengths); the buffer is one per thread and reused, so no fresh memory is touched per block.

Where it cannot be used it says so and the caller writes through the page cache as before: filesystems without
``O_DIRECT`` (tmpfs), unaligned offsets or lengths (the tail of a volume whose size is not a multiple of 4 KiB),
blocks larger than the buffer. Linux keeps the page cache coherent with direct writes on the same file, so
mixing the two on one file is safe. Offsets and lengths are in bytes.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

#: alignment of offsets, lengths and memory for O_DIRECT (the logical block size of every common device)
ALIGN = 4096
#: the largest block written directly (the bank's chunks are 4 MiB)
MAX_BLOCK = 8 << 20


_local = threading.local()


def _buffer() -> mmap.mmap:
    """This thread's page-aligned buffer of :data:`MAX_BLOCK` bytes (anonymous mappings are page-aligned)."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = mmap.mmap(-1, MAX_BLOCK)
    return buf


def open_direct(path: str | os.PathLike) -> int:
    """A write-only ``O_DIRECT`` descriptor of an existing file, or -1 where the filesystem refuses O_DIRECT."""
    if not hasattr(os, "O_DIRECT"):
        return -1
    try:
        return os.open(os.fspath(path), os.O_WRONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return -1
        raise


def pwrite_direct(fd: int, data: bytes | memoryview, offset: int) -> bool:
    """Write all of ``data`` at ``offset`` through the ``O_DIRECT`` descriptor ``fd``; False, having written
    nothing, when ``data`` or ``offset`` is not aligned, ``data`` is larger than :data:`MAX_BLOCK`, or the
    filesystem refuses the write (EINVAL). Other ``OSError`` propagate."""
    n = len(data)
    if fd < 0 or n == 0 or n > MAX_BLOCK or n % ALIGN or offset % ALIGN:
        return False
    buf = _buffer()
    buf[:n] = data
    view = memoryview(buf)[:n]
    done = 0
    try:
        while done < n:
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError as exc:
        if exc.errno != errno.EINVAL or done:
            raise
        return False
    finally:
        view.release()
    return True


class DirectWriter:
    """``O_DIRECT`` writes of aligned blocks to ``path`` (opened write-only beside the caller's descriptor).

    :meth:`pwrite` returns False, having written nothing, when the block cannot go direct; the caller then writes
    it itself. After the first refusal by the filesystem every later call returns False at once. Thread-safe (one
    write at a time). :meth:`close` releases the descriptor; it does not fsync (the
    caller's ``fsync`` covers the file's metadata; the data is on the device when :meth:`pwrite` returns).
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self._lock = threading.Lock()
        self._fd = open_direct(path) if enabled else -1

    @property
    def active(self) -> bool:
        """Whether direct writes are still possible on this target."""
        return self._fd >= 0

    def pwrite(self, data: bytes | memoryview, offset: int) -> bool:
        """Write all of ``data`` at ``offset`` directly; False (nothing written) when it cannot go direct."""
        n = len(data)
        if self._fd < 0 or n == 0 or n > MAX_BLOCK or n % ALIGN or offset % ALIGN:
            return False
        with self._lock:
            if self._fd < 0:
                return False
            if pwrite_direct(self._fd, data, offset):
                return True
            self._close_locked()  # the filesystem refuses O_DIRECT writes after all: buffered from now on
            return False

    def _close_locked(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Release the descriptor (idempotent)."""
        with self._lock:
            self._close_locked()


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_tuned = False
_malloc_lock = threading.Lock()


def tune_malloc(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Keep glibc's malloc from handing 4 MiB buffers back to the kernel after every chunk (once per process).

    By default glibc serves blocks of this size with fresh ``mmap`` pages, or trims them off the heap when freed,
    so every chunk read, hashed or decoded touches new pages; on virtual machines those page faults cost more
    than the copy itself (docs/performance.md). Raising ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``
    (``mallopt(3)``) makes freed chunk buffers reusable; the process keeps at most ``trim_threshold`` bytes of
    free heap. Returns whether the settings were applied (False on non-glibc systems, or when the
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables already chose).
    """
    global _malloc_tuned
    with _malloc_lock:
        if _malloc_tuned:
            return True
        if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
            return False
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
        _malloc_tuned = ok
        return ok
