"""Block I/O on local files and block devices, in one room below the bank and the cloud drivers.

- :mod:`opencsbs.blockio.direct`: ``O_DIRECT`` writes of aligned blocks and glibc ``malloc`` tuning.
- :mod:`opencsbs.blockio.sparse`: allocated extents, hole punching, zeroing, range arithmetic and early
  writeback (``sync_file_range``).
- :mod:`opencsbs.blockio.files`: :class:`~opencsbs.blockio.files.FileBlockReader` and
  :class:`~opencsbs.blockio.files.FileBlockWriter`, the file-backed
  :class:`~opencsbs.core.blocks.BlockReader`/:class:`~opencsbs.core.blocks.BlockWriter` used by the libvirt
  driver, the sandbox, the tests and the benchmarks.

Offsets and lengths are in bytes everywhere.
"""
