"""``qemu-img`` and libvirt backup XML for the libvirt driver: pull-mode backup and checkpoint XML, ``qemu-img``
calls (image info, dirty-bitmap maps, conversions) and the qcow2 restore writer. Raw files are read and written
with :mod:`opencsbs.blockio.files`. No libvirt import (the driver passes plain values).

Sources: libvirt backup and checkpoint XML (https://libvirt.org/formatbackup.html,
https://libvirt.org/formatcheckpoint.html), libvirt's incremental backup internals
(https://libvirt.org/kbase/incrementalbackupinternals.html: a pull-mode export's dirty bitmap read with
``qemu-img map`` and ``x-dirty-bitmap``, where dirty areas read as ``"data": false``), ``qemu-img(1)``.

All readers and writers work on bounded buffers (the bank's chunk size); a disk is never held in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from opencsbs.blockio.files import FileBlockWriter
from opencsbs.blockio.sparse import merge_ranges
from opencsbs.core import codes
from opencsbs.core.blocks import Range
from opencsbs.core.errors import CSBSError

#: how long one qemu-img call may take (seconds) before the step fails
QEMU_IMG_TIMEOUT = 6 * 3600


def qemu_img(*args: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    """Run ``qemu-img args...``; its stdout. Raises ``CSBSError(INTERNAL_ERROR)`` with qemu-img's message."""
    try:
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise CSBSError(codes.INTERNAL_ERROR, message="qemu-img is not installed (package qemu-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise CSBSError(codes.INTERNAL_ERROR, message=f"qemu-img {args[0]} timed out") from exc
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise CSBSError(codes.INTERNAL_ERROR, message=f"qemu-img {args[0]}: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def image_info(path: str, fmt: str | None) -> dict:
    """``qemu-img info --output=json`` of a local image (``-U``: also while QEMU holds it)."""
    args = ["info", "--output=json", "-U"]
    if fmt:
        args += ["-f", fmt]
    return json.loads(qemu_img(*args, path))


def nbd_url(socket: str, export: str) -> str:
    """The ``nbd+unix`` URL of one export of a pull-mode backup."""
    return f"nbd+unix:///{export}?socket={socket}"


def pull_backup_xml(socket: str, disks: Sequence[tuple[str, str, str | None]]) -> str:
    """``<domainbackup mode='pull'>`` serving every disk over NBD on the unix ``socket``.

    ``disks``: ``(target, scratch_file, incremental_from)``; ``incremental_from`` is a checkpoint name (the export
    then carries the bitmap of changes since it, named ``backup-<target>``) or None (full)."""
    parts = []
    for target, scratch, since in disks:
        mode = f" backupmode='incremental' incremental={quoteattr(since)}" if since else " backupmode='full'"
        parts.append(f"<disk name={quoteattr(target)} backup='yes' type='file'{mode}>"
                     f"<scratch file={quoteattr(scratch)}/></disk>")
    return (f"<domainbackup mode='pull'><server transport='unix' socket={quoteattr(socket)}/>"
            f"<disks>{''.join(parts)}</disks></domainbackup>")


def checkpoint_xml(name: str, disks: Sequence[tuple[str, bool]], description: str = "") -> str:
    """``<domaincheckpoint>`` named ``name``: ``disks`` is ``(target, with_bitmap)``; only qcow2 disks can carry a
    bitmap, the others are listed with ``checkpoint='no'``."""
    parts = "".join(f"<disk name={quoteattr(t)} checkpoint='{'bitmap' if b else 'no'}'/>" for t, b in disks)
    desc = f"<description>{escape(description)}</description>" if description else ""
    return f"<domaincheckpoint><name>{escape(name)}</name>{desc}<disks>{parts}</disks></domaincheckpoint>"


def checkpoint_bitmap_disks(xml: str) -> tuple[str, frozenset[str]]:
    """``(description, targets with a bitmap)`` of a checkpoint's XML (``virDomainCheckpointGetXMLDesc``)."""
    root = ET.fromstring(xml)
    disks = frozenset(d.get("name", "") for d in root.findall("./disks/disk") if d.get("checkpoint") == "bitmap")
    return (root.findtext("description") or "").strip(), disks


def dirty_extents(socket: str, export: str, bitmap: str) -> list[Range]:
    """Ranges marked dirty in the exported bitmap ``bitmap`` of a pull-mode backup (sorted, merged)."""
    opts = (f"driver=nbd,export={export},server.type=unix,server.path={socket},"
            f"x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}")
    entries = json.loads(qemu_img("map", "--output=json", "--image-opts", opts))
    return merge_ranges([(int(e["start"]), int(e["length"])) for e in entries if not e.get("data")])


def copy_to_raw(source: str, fmt: str | None, target: Path) -> None:
    """Copy a disk image (a path, or an ``nbd+unix`` URL) into a sparse raw file: zero and unallocated areas stay
    holes (``qemu-img convert``, streamed)."""
    args = ["convert", "-O", "raw"]
    if fmt:
        args += ["-f", fmt]
    qemu_img(*args, source, str(target))
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Qcow2Writer:
    """:class:`~opencsbs.core.blocks.BlockWriter` of a qcow2 image: writes go to a sparse raw scratch file;
    :meth:`flush` converts it to qcow2 next to the image (same cluster size) and renames it over the image
    (atomic: the image is either the old or the whole new one; owner and mode kept). :meth:`close` drops the
    scratch file; an image never flushed stays untouched. The new image has no backing file and no bitmaps."""

    def __init__(self, path: Path, size: int, scratch_dir: Path, cluster_size: int | None = None):
        self.path = Path(path)
        self.size = size
        self.cluster_size = cluster_size
        scratch_dir.mkdir(parents=True, exist_ok=True)
        self._scratch = scratch_dir / f"restore-{uuid.uuid4().hex}.raw"
        self._raw = FileBlockWriter(self._scratch, size, mode=0o600)
        self._dirty = True

    def write(self, offset: int, data: bytes) -> None:
        self._raw.write(offset, data)
        self._dirty = True

    def write_zeroes(self, offset: int, length: int) -> None:
        self._raw.write_zeroes(offset, length)
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty:
            return
        self._raw.flush()
        tmp = self.path.with_name(f".{self.path.name}.restore-{uuid.uuid4().hex[:8]}")
        opts = ["-o", f"cluster_size={self.cluster_size}"] if self.cluster_size else []
        try:
            qemu_img("convert", "-f", "raw", "-O", "qcow2", *opts, str(self._scratch), str(tmp))
            st = os.stat(self.path)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            tmp.unlink(missing_ok=True)
        self._dirty = False

    def close(self) -> None:
        self._raw.close()
        self._scratch.unlink(missing_ok=True)
