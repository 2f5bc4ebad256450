"""engine.read_limit_mib_s: a backup reads a disk no faster than the limit, and the backup it makes is the same."""

from __future__ import annotations

import time

import pytest

from opencsbs.engine.pacing import PacedReader, paced

MIB = 1024 * 1024


class BytesReader:
    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.closed = False

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def allocated_ranges(self):
        return None

    def close(self) -> None:
        self.closed = True


def test_unlimited_is_the_reader_itself():
    reader = BytesReader(b"x" * 10)
    assert paced(reader, 0) is reader


def test_a_limit_spreads_the_reads_and_keeps_the_bytes():
    data = bytes(range(256)) * (4 * MIB // 256)
    reader = paced(BytesReader(data), 8.0)  # 4 MiB at 8 MiB/s: at least half a second
    assert isinstance(reader, PacedReader)
    started = time.monotonic()
    got = b"".join(reader.read(off, MIB) for off in range(0, len(data), MIB))
    assert time.monotonic() - started >= 0.5
    assert got == data
    reader.close()
    assert reader._reader.closed


def test_a_negative_limit_is_refused_by_the_settings():
    from pydantic import ValidationError

    from opencsbs.config import EngineSettings

    with pytest.raises(ValidationError):
        EngineSettings(read_limit_mib_s=-1)
    assert EngineSettings(read_limit_mib_s=2.5).read_limit_mib_s == 2.5
