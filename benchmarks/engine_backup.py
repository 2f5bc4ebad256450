#!/usr/bin/env python3
"""End-to-end benchmark of the engine on the sandbox cloud: protect → snapshot → bank → available, through the
same code the API runs (service.backups + engine workers), on one server with one disk.

    .venv/bin/python benchmarks/engine_backup.py               # 2 GiB disk, half random
    .venv/bin/python benchmarks/engine_backup.py --size-gb 1

Steps, each timed from the protect call until the checkpoint_item reads available (or the restore succeeds):
  full         first backup (everything allocated is read);
  incremental  after rewriting 1 % of the disk in ``--change-runs`` runs (default 64) through ``sandbox write``
               (a run touches one or two 4 MiB chunks, which are read whole; the sandbox's change log
               gives the changed ranges, so only those are read);
  scattered    after rewriting 1 % of the disk in 64 KiB writes at random 64 KiB-aligned offsets (how file
               systems, logs and databases change a disk); only the changed 64 KiB extents are read and stored
               (docs/bank.md, "Pieces");
  reread       another 1 % change, backed up with ``incremental: false`` semantics for reading (every allocated
               block read again; the bank still stores only new chunks);
  restore      the last backup back onto the disk, SHA-256 of every byte compared.
Prints MB/s of the disk's data, read and stored bytes and the ratios set as targets: incremental ≤ 5 % of the
full backup's time with changed ranges, ≤ 40 % re-reading; for the scattered change bytes read and stored ≤ 2×
the changed bytes (random data: changed bytes do not compress, so they compare like for like).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

MiB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="bank threads")
    ap.add_argument("--change-runs", type=int, default=64, help="the 1 %% change is written in this many runs")
    args = ap.parse_args()

    from opencsbs.auth.base import Principal
    from opencsbs.clouds.sandbox.inventory import hash_volume, load_inventory, write_volume
    from opencsbs.config import Settings
    from opencsbs.db.base import transaction
    from opencsbs.clouds.sandbox.models import SandboxVolume
    from opencsbs.db.models import CheckpointItem, Restore
    from opencsbs.engine.worker import drain
    from opencsbs.bootstrap import build_runtime
    from opencsbs.service import backups, restores

    work = Path(tempfile.mkdtemp(prefix="opencsbs-bench-"))
    settings = Settings(data_dir=work, workers=0, scheduler=False)
    settings.bank.threads = args.threads
    rt = build_runtime(settings)
    server, volume = "bench-server", "bench-disk"
    with transaction(rt.sessions) as s:
        load_inventory(s, {"projects": {"bench": {"servers": [{"id": server, "name": "bench", "volumes": [
            {"id": volume, "size_gb": args.size_gb, "bootable": True}]}]}}}, settings.volumes_dir)
    size = args.size_gb << 30
    rng = random.Random(1)

    def write(offset: int, data: bytes) -> None:
        with transaction(rt.sessions) as s:
            write_volume(settings.volumes_dir, s.get(SandboxVolume, volume), offset, io.BytesIO(data))

    for off in range(0, size // 2, 64 * MiB):  # first half random, second half zeros (a hole)
        write(off, rng.randbytes(64 * MiB))
    principal = Principal("bench", "bench", frozenset({"admin", "member", "reader"}))

    def backup(incremental: bool) -> tuple[float, CheckpointItem]:
        t = time.perf_counter()
        cp = backups.create_backup(rt, principal, "bench", server, incremental=incremental)
        drain(rt)
        seconds = time.perf_counter() - t
        with rt.sessions() as s:
            item = s.query(CheckpointItem).filter_by(checkpoint_id=cp["id"]).one()
            assert item.status == "available", item.fail_reason
            list(item.volume_backups)  # loaded while the session is open
            return seconds, item

    def change_one_percent(seed: int) -> None:
        r = random.Random(seed)
        run = size // 100 // args.change_runs
        for _ in range(args.change_runs):
            write(r.randrange(0, size - run), r.randbytes(run))

    def change_scattered(seed: int) -> int:
        r = random.Random(seed)
        cluster = 64 << 10
        slots = r.sample(range(size // cluster), size // 100 // cluster)
        for slot in sorted(slots):
            write(slot * cluster, r.randbytes(cluster))
        return len(slots) * cluster

    full_s, full = backup(True)
    change_one_percent(2)
    inc_s, inc = backup(True)
    changed = change_scattered(4)
    sc_s, sc = backup(True)
    change_one_percent(3)
    reread_s, reread = backup(False)
    expected = hash_volume(settings.volumes_dir, volume)
    write(0, b"\xff" * MiB)
    t = time.perf_counter()
    rs = restores.create_restore(rt, principal, "bench", checkpoint_id=reread.checkpoint_id,
                                 request=restores.RestorePlan(reread.id, server, "OS::Nova::Server",
                                                                 ((reread.volume_backups[0].id, volume),)),
                                 power_on=True)
    drain(rt)
    restore_s = time.perf_counter() - t
    with rt.sessions() as s:
        assert s.get(Restore, rs["id"]).status == "success"
    exact = hash_volume(settings.volumes_dir, volume) == expected
    data_mb = size / 2 / MiB
    print(f"disk {args.size_gb} GiB (half random), bank threads {args.threads}, 1 % change in {args.change_runs} runs")
    print(f"{'step':<12} {'seconds':>8} {'MB/s':>8} {'read MB':>9} {'stored MB':>10}")
    for name, secs, item in (("full", full_s, full), ("incremental", inc_s, inc), ("scattered", sc_s, sc),
                             ("reread", reread_s, reread)):
        read = sum(v.read_bytes for v in item.volume_backups) / MiB
        print(f"{name:<12} {secs:8.2f} {data_mb / secs:8.0f} {read:9.1f} {item.stored_bytes / MiB:10.1f}")
    print(f"{'restore':<12} {restore_s:8.2f} {data_mb / restore_s:8.0f}   byte-exact: {exact}")
    print(f"incremental / full time: {inc_s / full_s:.1%} (target ≤ 5 %); "
          f"re-read / full time: {reread_s / full_s:.1%} (target ≤ 40 %)")
    sc_read = sum(v.read_bytes for v in sc.volume_backups)
    print(f"scattered: {changed / 1e6:.1f} MB changed in {changed >> 16} writes of 64 KiB; time {sc_s / full_s:.1%} of "
          f"the full backup (target ≤ 5 %); read {sc_read / changed:.2f}× and stored {sc.stored_bytes / changed:.2f}× "
          f"the changed bytes (target ≤ 2×)")
    rt.close()
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
