"""Direct writes of restore targets (opencsbs.blockio.direct.DirectWriter) and the writers that use them: the bytes a
restore leaves behind are the same whether a block went direct or through the page cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from conftest import require_component

from opencsbs.bank import Bank, Codec, LocalStore
from opencsbs.blockio.direct import ALIGN, DirectWriter
from opencsbs.blockio.files import FileBlockReader, FileBlockWriter

MiB = 1 << 20


def _disk_dir(tmp_path: Path) -> Path:
    """``tmp_path``, which must be on a filesystem that takes O_DIRECT (ext4, xfs, tmpfs since Linux 6.6): the
    direct path is what these tests are about, so outside CI they skip elsewhere and under CI they fail."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    w = DirectWriter(probe)
    ok = w.active and w.pwrite(bytes(ALIGN), 0)
    w.close()
    require_component(ok, f"{tmp_path} is on a filesystem without O_DIRECT")
    return tmp_path


def test_aligned_blocks_go_direct_and_the_rest_is_refused(tmp_path):
    d = _disk_dir(tmp_path)
    target = d / "t.img"
    target.write_bytes(bytes(3 * MiB))
    w = DirectWriter(target)
    block = os.urandom(MiB)
    assert w.pwrite(block, MiB)
    assert not w.pwrite(b"x" * 100, 0)  # unaligned length
    assert not w.pwrite(bytes(ALIGN), 100)  # unaligned offset
    assert not w.pwrite(bytes(16 * MiB), 0)  # larger than the buffer
    w.close()
    assert not w.pwrite(block, 0)  # closed
    data = target.read_bytes()
    assert data[MiB:2 * MiB] == block and data[:MiB] == bytes(MiB) and data[2 * MiB:] == bytes(MiB)


def test_a_filesystem_without_o_direct_falls_back(tmp_path, monkeypatch):
    """Filesystems that refuse O_DIRECT (EINVAL at open, as older tmpfs and some FUSE filesystems do; this
    machine's filesystems all take it, so the refusal is simulated): the writer goes through the page cache."""
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    target = tmp_path / "t.img"
    target.write_bytes(bytes(MiB))
    w = DirectWriter(target)
    assert not w.active and not w.pwrite(bytes(MiB), 0)
    w.close()
    block = os.urandom(MiB)
    fw = FileBlockWriter(target, MiB)
    fw.write(0, block)
    fw.flush()
    fw.close()
    assert target.read_bytes() == block


def test_restore_through_direct_writes_is_byte_exact(tmp_path):
    """A volume whose size is not a multiple of 4 KiB: whole chunks go direct, the tail through the page cache,
    zero chunks become holes; the restored file hashes like the original."""
    d = _disk_dir(tmp_path)
    size = 10 * MiB + 1234
    src = d / "src.img"
    with open(src, "wb") as fh:
        fh.write(os.urandom(4 * MiB))
        fh.write(bytes(4 * MiB))
        fh.write(os.urandom(size - 8 * MiB))
    bank = Bank(LocalStore(d / "bank"), Codec(None, level=1), threads=2)
    reader = FileBlockReader(src)
    bank.backup_volume(reader, "v")
    reader.close()
    out = d / "out.img"
    out.write_bytes(os.urandom(size))  # an old target full of other bytes
    writer = FileBlockWriter(out, size)
    assert writer._direct.active
    bank.restore_volume("v", writer)
    writer.close()
    bank.close()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
