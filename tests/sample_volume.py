"""The volume of the committed format-1 sample banks (tests/data/bank-format1): deterministic, compressible
content, so that the sample banks stay small."""

from __future__ import annotations

MiB = 1 << 20
#: three 4 MiB regions, the last one short
SIZE = 10 * MiB + 100 * 1024


def sample_volume() -> tuple[bytes, bytes, list[tuple[int, int]]]:
    """``(full, changed, changed_ranges)``: the volume of the full backup, the volume of the incremental on top of
    it, and the byte ranges that differ."""
    line = b"".join(b"opencsbs sample line %08d\n" % i for i in range(4096))
    full = bytearray((line * (SIZE // len(line) + 1))[:SIZE])
    full[4 * MiB:8 * MiB] = bytes(4 * MiB)  # a zero region
    changed = bytearray(full)
    ranges = [(1 * MiB, 64 << 10), (5 * MiB, 128 << 10), (9 * MiB + (64 << 10), 64 << 10)]
    for off, n in ranges:
        changed[off:off + n] = (b"changed %08d " % off) * (n // 17) + b"x" * (n % 17)
    assert len(changed) == SIZE
    return bytes(full), bytes(changed), ranges
