#!/usr/bin/env python3
"""Backup benchmark: the opencsbs bank against restic and borg on the same disk images, in the same run.

    .venv/bin/python benchmarks/backup.py                 # 2 GiB images
    .venv/bin/python benchmarks/backup.py --size 512M     # smaller
    .venv/bin/python benchmarks/backup.py --tools opencsbs,restic

Images (raw disk images, every block allocated so that no tool can skip holes):
  random  incompressible data;
  zeros   all zero bytes;
  half    first half random, second half zeros;
  half+1% the half image with 1 % of its bytes rewritten in ``--change-runs`` runs at random places;
  half+scattered  the half image with 1 % of its bytes rewritten in 64 KiB writes at random 64 KiB-aligned
          offsets (how file systems, logs and databases change a disk; QEMU tracks 64 KiB clusters).

Operations, each in its own process (wall time and peak RSS of that process):
  full backup of each image into a fresh repository; the incremental backup of half+1% on top of half (opencsbs
  twice: with the changed ranges given, and re-reading everything with the previous backup as base); the
  incremental of half+scattered on top of half (opencsbs with the changed ranges, and re-reading); the
  restore of each backup to a new file, followed by fsync of that file (opencsbs fsyncs itself).

For the scattered change every tool's incremental prints its time, bytes read and bytes stored (growth of the
repository), and their ratios to the changed bytes (random data: the changed bytes do not compress, so they
compare like for like with compressed sizes). restic and borg know no changed ranges: they read the whole
image (its size is printed as their bytes read); opencsbs reports the bytes it read.

Times are wall times of the whole process (interpreter start included, as for the peers); opencsbs rows also
show the time spent inside the bank call ("in process"), which is what a long-running opencsbs worker spends.

Page cache: warm. Before every timed operation the files it reads (the image for a backup, the whole repository
for a restore) are read once with the page cache kept; nothing is dropped (dropping caches would disturb the other
work on a shared machine). Every tool gets the same treatment. Durability: each tool with its defaults (opencsbs
fsyncs every chunk; restic and borg sync their pack/segment files).

Settings: opencsbs 4 MiB chunks, BLAKE3, zstd level 1, 2 worker threads (``--threads``), unencrypted and, as a
second row, AES-256-GCM encrypted; restic (always encrypted, compression auto); borg ``-e none`` with
``--compression zstd,1``.

Targets: full backup >= 4x restic's throughput; incremental after 1 % change <= 5 % of the full
backup's time with changed ranges (<= 40 % re-reading); restore >= 2x restic's; bounded memory; the scattered
incremental stores and reads at most 2x the changed bytes (with changed ranges).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

MiB = 1 << 20
CHUNK = 4 * MiB
ROOT = Path(__file__).resolve().parent.parent


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# --- inner operations (run in a child process so that its peak RSS is its own) ----------------------------------
def inner(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    # the bank as a library (what the engine's workers hold), without the service's settings machinery
    from opencsbs.bank import Bank, Codec, LocalStore, load_key
    from opencsbs.blockio.files import FileBlockReader, FileBlockWriter

    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["backup", "restore"])
    p.add_argument("--bank", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--base")
    p.add_argument("--changed")
    p.add_argument("--key")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    bank = Bank(LocalStore(a.bank), Codec(load_key(a.key) if a.key else None, level=1), threads=a.threads)
    t = time.perf_counter()
    if a.op == "backup":
        reader = FileBlockReader(a.image)
        changed = [tuple(r) for r in json.loads(Path(a.changed).read_text())] if a.changed else None
        stats = bank.backup_volume(reader, a.index, base_index=a.base, changed_ranges=changed)
        reader.close()
        out = {"seconds": time.perf_counter() - t, "stored": stats.stored_bytes, "read": stats.read_bytes}
    else:
        idx = bank.read_index(a.index)
        writer = FileBlockWriter(a.image, idx.size)
        bank.restore_volume(a.index, writer)
        writer.close()
        out = {"seconds": time.perf_counter() - t}
    bank.close()
    print(json.dumps(out))


# --- outer harness ---------------------------------------------------------------------------------------------
def run(cmd: list[str], env: dict | None = None, capture: bool = False) -> tuple[float, int, str]:
    """Run ``cmd``; returns (wall seconds, peak RSS in bytes, stdout)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    out = proc.stdout.read().decode() if capture else ""
    err = proc.stderr.read().decode()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_maxrss * 1024, out


def warm(path: Path) -> None:
    """Read ``path`` (file or folder) once so that it sits in the page cache."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(16 * MiB):
                pass


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def same(a: Path, b: Path) -> bool:
    import hashlib

    def h(p):
        d = hashlib.blake2b()
        with open(p, "rb") as fh:
            while block := fh.read(16 * MiB):
                d.update(block)
        return d.digest()

    return a.stat().st_size == b.stat().st_size and h(a) == h(b)


def make_images(work: Path, size: int, runs: int, seed: int) -> tuple[dict[str, Path], list[tuple[int, int]]]:
    rnd = random.Random(seed)
    imgs = {}
    half = size // 2 // MiB * MiB
    for name in ("random", "zeros", "half"):
        path = work / f"{name}.img"
        imgs[name] = path
        with open(path, "wb") as fh:
            pos = 0
            while pos < size:
                n = min(16 * MiB, size - pos)
                if name == "random" or (name == "half" and pos < half):
                    n = min(n, half - pos) if name == "half" else n
                    fh.write(os.urandom(n))
                else:
                    fh.write(bytes(n))
                pos += n
    # 1 % of the bytes, in `runs` runs at random places of the half image (in its random and its zero part)
    total = size // 100
    per = max(4096, total // runs)
    changed: list[tuple[int, int]] = []
    changed_path = work / "half+1%.img"
    shutil.copyfile(imgs["half"], changed_path)
    with open(changed_path, "r+b") as fh:
        for _ in range(runs):
            off = rnd.randrange(0, size - per) // 4096 * 4096
            fh.seek(off)
            fh.write(os.urandom(per))
            changed.append((off, per))
    imgs["half+1%"] = changed_path
    (work / "changed.json").write_text(json.dumps(changed))
    # 1 % of the bytes in 64 KiB writes at random 64 KiB-aligned offsets
    cluster = 64 << 10
    slots = rnd.sample(range(size // cluster), max(1, total // cluster))
    scattered = sorted((slot * cluster, cluster) for slot in slots)
    scattered_path = work / "half+scattered.img"
    shutil.copyfile(imgs["half"], scattered_path)
    with open(scattered_path, "r+b") as fh:
        for off, n in scattered:
            fh.seek(off)
            fh.write(os.urandom(n))
    imgs["half+scattered"] = scattered_path
    (work / "scattered.json").write_text(json.dumps(scattered))
    return imgs, changed


class Tool:
    name = ""

    def __init__(self, work: Path):
        self.work = work / self.name.replace(" ", "_")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def repo(self, image: str) -> Path:
        return self.work / f"repo-{image.split('+')[0]}"


class OpenCSBS(Tool):
    def __init__(self, work: Path, threads: int, encrypted: bool):
        self.name = "opencsbs+aes" if encrypted else "opencsbs"
        super().__init__(work)
        self.threads = threads
        self.key = None
        if encrypted:
            self.key = self.work / "bank.key"
            self.key.write_text(os.urandom(32).hex())

    def _cmd(self, *args: str) -> list[str]:
        cmd = [sys.executable, __file__, "_inner", *args, "--threads", str(self.threads)]
        return cmd + (["--key", str(self.key)] if self.key else [])

    def init(self, image: str) -> None:
        pass

    def backup(self, image: str, path: Path, base: str | None = None, changed: Path | None = None):
        args = ["backup", "--bank", str(self.repo(image) / "bank"), "--image", str(path), "--index",
                f"checkpoints/{image.replace('+', 'p').replace('%', 'pc')}/{'ranges' if changed else 'v'}"]
        if base:
            args += ["--base", f"checkpoints/{base}/v"]
        if changed:
            args += ["--changed", str(changed)]
        secs, rss, out = run(self._cmd(*args), capture=True)
        self.inner = json.loads(out)
        self.inner_seconds = self.inner["seconds"]
        return secs, rss

    def restore(self, image: str, target: Path):
        kind = "ranges" if image == "half+scattered" else "v"  # the scattered image: the backup made of pieces
        index = f"checkpoints/{image.replace('+', 'p').replace('%', 'pc')}/{kind}"
        secs, rss, out = run(self._cmd("restore", "--bank", str(self.repo(image) / "bank"), "--image", str(target),
                                       "--index", index), capture=True)
        self.inner_seconds = json.loads(out)["seconds"]
        return secs, rss


class Restic(Tool):
    name = "restic"
    ENV = {"RESTIC_PASSWORD": "benchmark-password", "RESTIC_CACHE_DIR": ""}

    def env(self) -> dict:
        return {**self.ENV, "RESTIC_CACHE_DIR": str(self.work / "cache")}

    def init(self, image: str) -> None:
        run(["restic", "-r", str(self.repo(image)), "init", "-q"], env=self.env())

    def backup(self, image: str, path: Path, base: str | None = None, changed: Path | None = None):
        # the same file name in every snapshot, so that restic picks the previous snapshot as parent
        stage = self.work / "stage" / "disk.img"
        stage.parent.mkdir(exist_ok=True)
        if stage.exists() or stage.is_symlink():
            stage.unlink()
        os.link(path, stage)
        secs, rss, _ = run(["restic", "-r", str(self.repo(image)), "backup", "-q", "--tag", image,
                            "--host", "bench", str(stage)], env=self.env())
        return secs, rss

    def restore(self, image: str, target: Path):
        out = self.work / "restore"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        _, rss, _ = run(["restic", "-r", str(self.repo(image)), "restore", "latest", "--tag", image, "--target",
                         str(out)], env=self.env())
        restored = next(p for p in out.rglob("disk.img"))
        fsync_file(restored)
        secs = time.perf_counter() - t
        os.replace(restored, target)
        shutil.rmtree(out, ignore_errors=True)
        return secs, rss


class Borg(Tool):
    name = "borg"
    ENV = {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def env(self) -> dict:
        return {**self.ENV, "BORG_CACHE_DIR": str(self.work / "cache"), "BORG_CONFIG_DIR": str(self.work / "cfg"),
                "BORG_SECURITY_DIR": str(self.work / "sec")}

    def init(self, image: str) -> None:
        run(["borg", "init", "-e", "none", str(self.repo(image))], env=self.env())

    def backup(self, image: str, path: Path, base: str | None = None, changed: Path | None = None):
        stage = self.work / "stage" / "disk.img"
        stage.parent.mkdir(exist_ok=True)
        if stage.exists():
            stage.unlink()
        os.link(path, stage)
        name = image.replace("+", "p").replace("%", "pc")
        secs, rss, _ = self._create(image, name)
        return secs, rss

    def _create(self, image: str, name: str):
        cwd = os.getcwd()
        os.chdir(self.work / "stage")
        try:
            return run(["borg", "create", "--compression", "zstd,1", f"{self.repo(image)}::{name}", "disk.img"],
                       env=self.env())
        finally:
            os.chdir(cwd)

    def restore(self, image: str, target: Path):
        out = self.work / "restore"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        name = image.replace("+", "p").replace("%", "pc")
        cwd = os.getcwd()
        os.chdir(out)
        try:
            t = time.perf_counter()
            _, rss, _ = run(["borg", "extract", f"{self.repo(image)}::{name}"], env=self.env())
            fsync_file(out / "disk.img")
            secs = time.perf_counter() - t
        finally:
            os.chdir(cwd)
        os.replace(out / "disk.img", target)
        shutil.rmtree(out, ignore_errors=True)
        return secs, rss


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_inner":
        inner(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G", help="image size (e.g. 2G, 512M); default 2G")
    ap.add_argument("--tools", default="opencsbs,opencsbs+aes,restic,borg")
    ap.add_argument("--threads", type=int, default=2, help="opencsbs worker threads (default 2)")
    ap.add_argument("--change-runs", type=int, default=4, help="runs the 1 %% change is split into (default 4)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default $OPENCSBS_WORK/bench or .work/bench)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(args.workdir or Path(os.environ.get("OPENCSBS_WORK", ROOT / ".work")) / "bench")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    for exe in ("restic", "borg"):
        if exe in wanted and not shutil.which(exe):
            sys.exit(f"{exe} not found: apt-get install {'borgbackup' if exe == 'borg' else exe}")

    print(f"# images of {size / MiB:.0f} MiB; 1 % change in {args.change_runs} runs; page cache warm; "
          f"{os.cpu_count()} CPUs", flush=True)
    imgs, changed = make_images(work, size, args.change_runs, args.seed)
    changed_file = work / "changed.json"
    scattered_file = work / "scattered.json"
    scattered = [tuple(r) for r in json.loads(scattered_file.read_text())]
    touched = {o // CHUNK for off, n in changed for o in range(off, off + n, CHUNK)} | \
              {(off + n - 1) // CHUNK for off, n in changed}
    print(f"# changed ranges: {len(changed)} x {changed[0][1] / MiB:.2f} MiB touching {len(touched)} of "
          f"{-(-size // CHUNK)} 4 MiB chunks", flush=True)

    tools: list[Tool] = []
    for name in wanted:
        if name == "opencsbs":
            tools.append(OpenCSBS(work, args.threads, encrypted=False))
        elif name == "opencsbs+aes":
            tools.append(OpenCSBS(work, args.threads, encrypted=True))
        elif name == "restic":
            tools.append(Restic(work))
        elif name == "borg":
            tools.append(Borg(work))
        else:
            sys.exit(f"unknown tool {name}")

    rows: list[dict] = []

    def record(tool: Tool, op: str, image: str, nbytes: int, secs: float, rss: int, stored: int | None = None):
        inner_s = getattr(tool, "inner_seconds", None)
        tool.inner_seconds = None
        row = {"tool": tool.name, "op": op, "image": image, "seconds": secs, "mbps": nbytes / secs / 1e6,
               "rss_mb": rss / 1e6, "stored": stored, "in_process_seconds": inner_s}
        rows.append(row)
        st = f"{stored / 1e6:9.1f}" if stored is not None else " " * 9
        ins = f"  (in process {inner_s:.2f} s)" if inner_s is not None else ""
        print(f"{tool.name:13s} {op:22s} {image:8s} {secs:7.2f} s {row['mbps']:8.0f} MB/s  stored {st} MB  "
              f"peak RSS {rss / 1e6:6.0f} MB{ins}", flush=True)

    for tool in tools:
        for image in ("random", "zeros", "half"):
            tool.init(image)
            before = du(tool.repo(image))
            warm(imgs[image])
            secs, rss = tool.backup(image, imgs[image])
            record(tool, "full backup", image, size, secs, rss, du(tool.repo(image)) - before)
        # incremental: half+1% on top of half
        before = du(tool.repo("half"))
        warm(imgs["half+1%"])
        if isinstance(tool, OpenCSBS):
            secs, rss = tool.backup("half+1%", imgs["half+1%"], base="half", changed=changed_file)
            record(tool, "incr. (changed ranges)", "half+1%", size, secs, rss, du(tool.repo("half")) - before)
            before = du(tool.repo("half"))
            warm(imgs["half+1%"])
            secs, rss = tool.backup("half+1%", imgs["half+1%"], base="half")
            record(tool, "incr. (re-read)", "half+1%", size, secs, rss, du(tool.repo("half")) - before)
        else:
            secs, rss = tool.backup("half+1%", imgs["half+1%"], base="half")
            record(tool, "incr. (re-read)", "half+1%", size, secs, rss, du(tool.repo("half")) - before)
        # incremental: half+scattered on top of half
        changed_bytes = sum(n for _off, n in scattered)
        before = du(tool.repo("half"))
        warm(imgs["half+scattered"])
        if isinstance(tool, OpenCSBS):
            secs, rss = tool.backup("half+scattered", imgs["half+scattered"], base="half", changed=scattered_file)
            read = tool.inner["read"]
            record(tool, "scattered (ranges)", "half+sc", size, secs, rss, du(tool.repo("half")) - before)
            rows[-1].update(read=read, changed=changed_bytes)
            before = du(tool.repo("half"))
            warm(imgs["half+scattered"])
            secs, rss = tool.backup("half+scattered", imgs["half+scattered"], base="half")
            read = tool.inner["read"]
            record(tool, "scattered (re-read)", "half+sc", size, secs, rss, du(tool.repo("half")) - before)
            rows[-1].update(read=read, changed=changed_bytes)
        else:
            secs, rss = tool.backup("half+scattered", imgs["half+scattered"], base="half")
            record(tool, "scattered (re-read)", "half+sc", size, secs, rss, du(tool.repo("half")) - before)
            rows[-1].update(read=size, changed=changed_bytes)
        for image in ("random", "zeros", "half", "half+1%", "half+scattered"):
            target = work / "restored.img"
            if target.exists():
                target.unlink()
            warm(tool.repo(image))
            secs, rss = tool.restore(image, target)
            ok = same(target, imgs[image])
            record(tool, "restore" + ("" if ok else " MISMATCH"), image, size, secs, rss)
            if not ok:
                print(f"!! {tool.name} restored {image} differently", flush=True)
            target.unlink()

    # ratios
    def get(tool: str, op: str, image: str) -> dict | None:
        return next((r for r in rows if r["tool"] == tool and r["op"] == op and r["image"] == image), None)

    print("\n# ratios (throughput opencsbs / peer; incremental time / full time of the same tool)")
    for ours in ("opencsbs", "opencsbs+aes"):
        if not any(r["tool"] == ours for r in rows):
            continue
        for peer in ("restic", "borg"):
            if not any(r["tool"] == peer for r in rows):
                continue
            for op in ("full backup", "restore"):
                parts = []
                for image in ("random", "zeros", "half"):
                    a, b = get(ours, op, image), get(peer, op, image)
                    if a and b:
                        parts.append(f"{image} {a['mbps'] / b['mbps']:.1f}x")
                print(f"{ours:13s} vs {peer:7s} {op:12s}: " + ", ".join(parts))
        full = get(ours, "full backup", "half")
        for op in ("incr. (changed ranges)", "incr. (re-read)"):
            inc = get(ours, op, "half+1%")
            if full and inc:
                extra = ""
                if inc.get("in_process_seconds") and full.get("in_process_seconds"):
                    extra = (f"; in process (no interpreter start, as in a worker): "
                             f"{inc['in_process_seconds'] / full['in_process_seconds'] * 100:.1f} %")
                print(f"{ours:13s} {op:24s}: {inc['seconds'] / full['seconds'] * 100:.1f} % of its full backup time "
                      f"of half ({inc['seconds']:.2f} s vs {full['seconds']:.2f} s){extra}")
    print(f"\n# scattered change: 1 % of {size / MiB:.0f} MiB in {len(scattered)} writes of 64 KiB "
          f"({sum(n for _o, n in scattered) / 1e6:.1f} MB changed); time as % of the tool's full backup of half")
    for r in rows:
        if not r["op"].startswith("scattered"):
            continue
        full = get(r["tool"], "full backup", "half")
        pct = f"{r['seconds'] / full['seconds'] * 100:5.1f} %" if full else "   ?"
        inproc = ""
        if r.get("in_process_seconds") and full and full.get("in_process_seconds"):
            inproc = f" (in process {r['in_process_seconds'] / full['in_process_seconds'] * 100:4.1f} %)"
        print(f"{r['tool']:13s} {r['op']:20s}: {r['seconds']:6.2f} s = {pct}{inproc}; read {r['read'] / 1e6:7.1f} MB "
              f"= {r['read'] / r['changed']:5.1f}x changed; stored {r['stored'] / 1e6:6.1f} MB "
              f"= {r['stored'] / r['changed']:4.2f}x changed")
    for peer in ("restic", "borg"):
        full, inc = get(peer, "full backup", "half"), get(peer, "incr. (re-read)", "half+1%")
        if full and inc:
            print(f"{peer:13s} incr. (re-read)          : {inc['seconds'] / full['seconds'] * 100:.1f} % of its full "
                  f"backup time of half")
    peak = max((r["rss_mb"] for r in rows if r["tool"].startswith("opencsbs")), default=0)
    print(f"opencsbs peak RSS over all operations: {peak:.0f} MB (images of {size / MiB:.0f} MiB)")
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    if not args.keep:
        for p in work.iterdir():
            if p.name != "results.json":
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()


if __name__ == "__main__":
    main()
