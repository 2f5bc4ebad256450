"""Byte-level access to sandbox volume files: locking, change tracking, sparse copies, readers and writers.

A volume's bytes live in the sparse file ``<volumes_dir>/<volume_id>.img``.

- **Locking** (``flock`` on the volume file itself, so it works across threads and processes): writers
  (``opencsbs sandbox write``, restores), snapshot readers (per read) and snapshot creation hold the exclusive
  lock; a snapshot takes it on every disk of the server at once, so all disks are captured at one instant.
- **Snapshots are copy-on-write**: taking one only registers it (``cow/<volume_id>/<name>`` points at the
  snapshot folder, which holds ``<volume_id>.cow``, sparse, and ``<volume_id>.map``, the saved ranges). Before a
  writer changes a range of a volume, the range's old bytes are copied into the ``.cow`` file of every snapshot
  registered on the volume that has not saved them yet, then the range is appended to its ``.map``. A snapshot
  reader takes saved ranges from the ``.cow`` file and everything else from the volume itself. Taking a snapshot
  costs the same whatever the disk size; writes pay for it while it lives.
- **Change tracking**: every write appends ``"<offset> <length>"`` to ``<volume_id>.changes``; a restore or a
  resize appends ``reset``. A snapshot moves that log to ``changes/<volume_id>/<snapshot name>.log`` and appends
  the name to ``changes/<volume_id>/chain``: the changes between two snapshots are the union of the logs after
  the older one in the chain, up to the newer one. Writes that bypass these functions are not tracked (the
  sandbox's own CLI and restores go through them).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from opencsbs.blockio.files import FileBlockWriter
from opencsbs.blockio.sparse import data_extents, merge_ranges, pwrite_all
from opencsbs.core.blocks import Range

RESET = "reset"


def volume_file(volumes_dir: Path, volume_id: str) -> Path:
    """Path of a sandbox volume's bytes."""
    return Path(volumes_dir) / f"{volume_id}.img"


def change_log(volumes_dir: Path, volume_id: str) -> Path:
    """The log of writes since the volume's last snapshot."""
    return Path(volumes_dir) / f"{volume_id}.changes"


def changes_dir(volumes_dir: Path, volume_id: str) -> Path:
    """Where the per-snapshot change logs and the chain of a volume live."""
    return Path(volumes_dir) / "changes" / volume_id


def cow_dir(volumes_dir: Path, volume_id: str) -> Path:
    """The registry of live snapshots of a volume (one file per snapshot, holding its folder)."""
    return Path(volumes_dir) / "cow" / volume_id


def register_snapshot(volumes_dir: Path, volume_id: str, name: str, folder: Path, size: int) -> None:
    """Start copy-on-write for snapshot ``name`` of ``volume_id`` (volume exclusively locked)."""
    cow = Path(folder) / f"{volume_id}.cow"
    with open(cow, "wb") as fh:
        fh.truncate(size)
    (Path(folder) / f"{volume_id}.map").write_bytes(b"")
    reg = cow_dir(volumes_dir, volume_id)
    reg.mkdir(parents=True, exist_ok=True)
    (reg / name).write_text(str(folder))


def unregister_snapshot(volumes_dir: Path, volume_id: str, name: str) -> None:
    """Stop copy-on-write for snapshot ``name`` of ``volume_id`` (idempotent)."""
    (cow_dir(volumes_dir, volume_id) / name).unlink(missing_ok=True)


def _uncovered(saved: list[Range], offset: int, length: int) -> list[Range]:
    """Parts of ``[offset, offset+length)`` not in ``saved`` (sorted, merged)."""
    out = []
    pos, end = offset, offset + length
    for off, n in saved:
        if off + n <= pos:
            continue
        if off >= end:
            break
        if off > pos:
            out.append((pos, off - pos))
        pos = max(pos, off + n)
        if pos >= end:
            break
    if pos < end:
        out.append((pos, end - pos))
    return out


def preserve(volumes_dir: Path, volume_id: str, fd: int, offset: int, length: int) -> None:
    """Before ``[offset, offset+length)`` of the volume open as ``fd`` is overwritten (exclusive lock held): save
    its old bytes into every live snapshot of the volume that has not saved them yet."""
    reg = cow_dir(volumes_dir, volume_id)
    if not reg.exists():
        return
    for entry in sorted(reg.iterdir()):
        try:
            folder = Path(entry.read_text())
        except FileNotFoundError:
            continue
        cow, map_file = folder / f"{volume_id}.cow", folder / f"{volume_id}.map"
        if not cow.exists() or not map_file.exists():
            continue
        saved = merge_ranges(read_log(map_file) or [])
        todo = _uncovered(saved, offset, length)
        if not todo:
            continue
        cfd = os.open(cow, os.O_WRONLY)
        try:
            size = os.fstat(cfd).st_size
            for off, n in todo:
                n = max(0, min(n, size - off))
                pos = off
                while pos < off + n:
                    step = min(4 * 1024 * 1024, off + n - pos)
                    data = os.pread(fd, step, pos)
                    if len(data) < step:
                        data += bytes(step - len(data))
                    if data.count(0) != len(data):
                        pwrite_all(cfd, data, pos)
                    pos += step
        finally:
            os.close(cfd)
        with open(map_file, "a") as fh:
            fh.write("".join(f"{off} {n}\n" for off, n in todo))


def write_at(volumes_dir: Path, volume_id: str, fd: int, offset: int, data: bytes) -> None:
    """Write ``data`` into the volume (exclusive lock held): copy-on-write for live snapshots, the write itself,
    and the change-log record."""
    preserve(volumes_dir, volume_id, fd, offset, len(data))
    pwrite_all(fd, data, offset)
    record_change(volumes_dir, volume_id, offset, len(data))


def record_change(volumes_dir: Path, volume_id: str, offset: int | None = None, length: int | None = None) -> None:
    """Append a written range (or ``reset`` when ``offset`` is None) to the volume's change log."""
    line = RESET if offset is None else f"{offset} {length}"
    fd = os.open(change_log(volumes_dir, volume_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@contextmanager
def locked_volumes(paths: Sequence[Path], exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on every file in ``paths`` (taken in sorted order, so two lockers never deadlock)."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with ExitStack() as stack:
        for path in sorted(set(paths)):
            fd = os.open(path, os.O_RDONLY)
            stack.callback(os.close, fd)
            fcntl.flock(fd, mode)
        yield


def sparse_copy(src: Path, dst: Path) -> int:
    """Copy ``src`` to ``dst`` keeping holes (only allocated extents are copied, in-kernel). Returns bytes copied."""
    copied = 0
    sfd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(sfd).st_size
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(dfd, size)
            for offset, length in data_extents(sfd, size):
                done = 0
                while done < length:
                    n = os.copy_file_range(sfd, dfd, length - done, offset + done, offset + done)
                    if n == 0:
                        break
                    done += n
                copied += done
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return copied


def read_log(path: Path) -> list[Range] | None:
    """Ranges recorded in one change log; None when it holds a ``reset``."""
    ranges: list[Range] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if line == RESET:
            return None
        off, length = line.split()
        ranges.append((int(off), int(length)))
    return ranges


def rotate_change_log(volumes_dir: Path, volume_id: str, name: str) -> None:
    """At a snapshot named ``name`` (volume exclusively locked): move the pending log under that name and add the
    name to the chain. Idempotent for a retried snapshot of the same name."""
    cdir = changes_dir(volumes_dir, volume_id)
    cdir.mkdir(parents=True, exist_ok=True)
    pending = change_log(volumes_dir, volume_id)
    target = cdir / f"{name}.log"
    data = pending.read_bytes() if pending.exists() else b""
    with open(target, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    pending.unlink(missing_ok=True)
    chain = cdir / "chain"
    names = chain.read_text().split() if chain.exists() else []
    if name not in names:
        with open(chain, "a") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def changes_between(volumes_dir: Path, volume_id: str, since: str, until: str) -> list[Range] | None:
    """Ranges written after snapshot ``since`` up to snapshot ``until``; None when unknown (a log is missing,
    holds a reset, or ``since`` does not precede ``until``)."""
    cdir = changes_dir(volumes_dir, volume_id)
    chain_file = cdir / "chain"
    if not chain_file.exists():
        return None
    names = chain_file.read_text().split()
    if since not in names or until not in names:
        return None
    i, j = names.index(since), names.index(until)
    if i >= j:
        return None
    ranges: list[Range] = []
    for name in names[i + 1 : j + 1]:
        log = cdir / f"{name}.log"
        if not log.exists():
            return None
        part = read_log(log)
        if part is None:
            return None
        ranges.extend(part)
    return merge_ranges(ranges)


def prune_change_logs(volumes_dir: Path, volume_id: str, keep: set[str]) -> int:
    """Drop the change-log generations of ``volume_id`` that no token in ``keep`` can need; returns how many log
    files were removed.

    :func:`changes_between` ``(since, until)`` reads the logs after ``since`` in the chain, and ``until`` is
    always a newer snapshot. So with ``first`` the oldest chain name in ``keep``, the logs up to and including
    ``first``'s are never read again: they are removed and the chain starts at ``first``. With no token of
    ``keep`` in the chain, every generation goes (and the pending log too: the next backup of the volume has no
    base, so it reads the whole disk anyway). A token asked for later that is no longer in the chain makes
    :func:`changes_between` answer None (a full read), never a wrong range list. Runs under the volume's
    exclusive lock (the one snapshots take to rotate), or without it when the volume itself is gone.
    """
    cdir = changes_dir(volumes_dir, volume_id)
    if not cdir.is_dir():
        return 0
    path = volume_file(volumes_dir, volume_id)
    with ExitStack() as stack:
        if path.exists():
            stack.enter_context(locked_volumes([path], exclusive=True))
        chain = cdir / "chain"
        names = chain.read_text().split() if chain.exists() else []
        kept = [i for i, name in enumerate(names) if name in keep]
        start = kept[0] if kept else len(names)
        drop = set(names[: start + 1] if kept else names)
        listed = set(names)
        # logs of names not in the chain (a snapshot interrupted between its log and its chain entry) are dropped
        # only with the whole chain: such a snapshot may still be finishing
        removed = 0
        for log in cdir.glob("*.log"):
            name = log.name[: -len(".log")]
            if name in drop or (not kept and name not in listed):
                log.unlink(missing_ok=True)
                removed += 1
        if kept:
            if start > 0:
                tmp = cdir / "chain.tmp"
                tmp.write_text("".join(n + "\n" for n in names[start:]))
                os.replace(tmp, chain)
        else:
            chain.unlink(missing_ok=True)
            change_log(volumes_dir, volume_id).unlink(missing_ok=True)
            if not path.exists():
                try:
                    cdir.rmdir()
                except OSError:
                    pass
    return removed


class CowSnapshotReader:
    """:class:`~opencsbs.core.blocks.BlockReader` of a copy-on-write snapshot: saved ranges from the ``.cow``
    file, the rest from the live volume (read under the volume's exclusive lock, so no write is half-seen)."""

    def __init__(self, volume_path: Path, folder: Path, volume_id: str, size: int):
        self.size = size
        self._vfd = os.open(volume_path, os.O_RDONLY)
        self._cfd = os.open(Path(folder) / f"{volume_id}.cow", os.O_RDONLY)
        self._map = Path(folder) / f"{volume_id}.map"
        self._saved: list[Range] = []
        self._map_len = -1

    def _saved_ranges(self) -> list[Range]:
        length = self._map.stat().st_size
        if length != self._map_len:
            self._saved = merge_ranges(read_log(self._map) or [])
            self._map_len = length
        return self._saved

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        fcntl.flock(self._vfd, fcntl.LOCK_EX)
        try:
            data = os.pread(self._vfd, length, offset)
            if len(data) < length:
                data += bytes(length - len(data))
            overlaps = [(max(off, offset), min(off + n, offset + length)) for off, n in self._saved_ranges()
                        if off < offset + length and off + n > offset]
            if not overlaps:
                return data
            buf = bytearray(data)
            for lo, hi in overlaps:
                buf[lo - offset:hi - offset] = os.pread(self._cfd, hi - lo, lo).ljust(hi - lo, b"\0")
        finally:
            fcntl.flock(self._vfd, fcntl.LOCK_UN)
        return bytes(buf)

    def allocated_ranges(self) -> Sequence[Range] | None:
        fcntl.flock(self._vfd, fcntl.LOCK_EX)
        try:
            live = data_extents(self._vfd, self.size)
            return merge_ranges(live + self._saved_ranges())
        finally:
            fcntl.flock(self._vfd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._vfd, self._cfd):
            if fd >= 0:
                os.close(fd)
        self._vfd = self._cfd = -1


class VolumeWriter(FileBlockWriter):
    """:class:`~opencsbs.core.blocks.BlockWriter` over a sandbox volume file for a restore (a
    :class:`~opencsbs.blockio.files.FileBlockWriter` writing the file in place).

    Holds the volume's exclusive lock until closed (a snapshot waits), copies on write for live snapshots, and
    marks the change log ``reset`` (every byte may change, so the next incremental backup re-reads the volume).
    """

    def __init__(self, volumes_dir: Path, volume_id: str, size: int):
        super().__init__(volume_file(volumes_dir, volume_id), size, truncate=False, create=False)
        self.volumes_dir = Path(volumes_dir)
        self.volume_id = volume_id
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        record_change(volumes_dir, volume_id)

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.size:
            raise ValueError(f"write past the end of {os.path.basename(self.path)} ({self.size} bytes)")
        preserve(self.volumes_dir, self.volume_id, self._fd, offset, len(data))
        super().write(offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        length = max(0, min(length, self.size - offset))
        if length:
            preserve(self.volumes_dir, self.volume_id, self._fd, offset, length)
            super().write_zeroes(offset, length)
