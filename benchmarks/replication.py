#!/usr/bin/env python3
"""Replication benchmark: a copy between two opencsbs banks against ``restic copy`` between two restic repositories
of the same data, in the same run.

    .venv/bin/python benchmarks/replication.py                    # a 2 GiB image
    .venv/bin/python benchmarks/replication.py --size 512M        # smaller
    .venv/bin/python benchmarks/replication.py --no-s3            # local -> local only

Data: one raw disk image of random (incompressible) bytes, every block allocated, and the same image with 1 % of
its bytes rewritten in ``--change-runs`` runs at random places. Each tool first backs up the image (full) and then
the changed image (incremental, on top of the full) into a *source* repository (not timed). Then, timed, each tool
copies the full backup to an empty *destination* and then the incremental to the same destination:

  opencsbs       ``opencsbs.bank.replicate.copy_index`` (what the ``copy`` job runs), unencrypted banks
  opencsbs+aes   the same with both banks AES-256-GCM encrypted under the same key (chunks sent as stored)
  restic         ``restic copy --from-repo SRC SNAPSHOT`` into a repository initialised with
                 ``--copy-chunker-params`` (so that chunks are reused, not re-chunked); restic always encrypts

Destinations: a local folder, and the suite's S3 server when ``OPENCSBS_TEST_S3_ENDPOINT`` /
``OPENCSBS_TEST_S3_ACCESS_KEY`` / ``OPENCSBS_TEST_S3_SECRET_KEY`` are set (``/work/main/.work/env/s3.env`` style;
restic reaches it as ``s3:ENDPOINT/BUCKET/PREFIX``).

Each copy runs in its own process (wall time, interpreter start included, and peak RSS of that process). Bytes
sent: opencsbs counts the stored bytes it put on the destination; for restic (and as a check for opencsbs) the
growth of the destination (folder size, or the sum of the S3 objects under its prefix). For the incremental the
bytes sent are compared with its *new chunks*: the stored size of the chunks of the incremental that the full
backup does not have. Page cache: warm (the source is read once before every copy). Durability: each tool with
its defaults (opencsbs syncs the chunks it wrote before writing the index; restic syncs its pack files).

Target (docs/performance.md): copy throughput >= 3x restic's, and an incremental copy sending no more than its new
chunks.
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
import uuid
from pathlib import Path

MiB = 1 << 20
CHUNK = 4 * MiB
ROOT = Path(__file__).resolve().parent.parent
S3_ENDPOINT = os.environ.get("OPENCSBS_TEST_S3_ENDPOINT")
S3_ACCESS = os.environ.get("OPENCSBS_TEST_S3_ACCESS_KEY")
S3_SECRET = os.environ.get("OPENCSBS_TEST_S3_SECRET_KEY")
BUCKET = "opencsbs-bench"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# --- inner operations (each in a child process, so that its peak RSS is its own) -------------------------------
def _bank(spec: dict, threads: int):
    from opencsbs.bank import Bank, Codec, LocalStore, S3Store, load_key

    key = load_key(spec["key"]) if spec.get("key") else None
    if spec["kind"] == "s3":
        store = S3Store(S3_ENDPOINT, BUCKET, S3_ACCESS, S3_SECRET, prefix=spec["prefix"])
        return Bank(store, Codec(key, level=1), threads=threads, io_bound=True)
    return Bank(LocalStore(spec["path"]), Codec(key, level=1), threads=threads)


def inner(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["backup", "copy"])
    p.add_argument("--source", required=True, help="bank spec (JSON)")
    p.add_argument("--target", help="bank spec (JSON) of the copy's destination")
    p.add_argument("--image")
    p.add_argument("--index", required=True)
    p.add_argument("--base")
    p.add_argument("--changed")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    source = _bank(json.loads(a.source), a.threads)
    t = time.perf_counter()
    if a.op == "backup":
        from opencsbs.blockio.files import FileBlockReader

        reader = FileBlockReader(a.image)
        changed = [tuple(r) for r in json.loads(Path(a.changed).read_text())] if a.changed else None
        stats = source.backup_volume(reader, a.index, base_index=a.base, changed_ranges=changed)
        reader.close()
        out = {"seconds": time.perf_counter() - t, "stored": stats.stored_bytes}
    else:
        from opencsbs.bank.replicate import copy_index

        target = _bank(json.loads(a.target), a.threads)
        stats = copy_index(source, target, a.index)
        out = {"seconds": time.perf_counter() - t, "sent_bytes": stats.sent_bytes, "sent_chunks": stats.sent_chunks,
               "present_chunks": stats.present_chunks}
        target.close()
    source.close()
    print(json.dumps(out))


def new_chunk_bytes(spec: dict, full: str, incr: str) -> tuple[int, int]:
    """(count, stored bytes) of the chunks of ``incr`` that ``full`` does not reference, in the source bank."""
    sys.path.insert(0, str(ROOT / "src"))
    from opencsbs.bank.layout import chunk_key

    bank = _bank(spec, 1)
    try:
        # addresses(): whole chunks and the packs an incremental's pieces point into (bank format 2)
        new = bank.read_index(incr).addresses() - bank.read_index(full).addresses()
        return len(new), sum(bank.store.head(chunk_key(c)).size for c in new)
    finally:
        bank.close()


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
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {err[-2000:]}")
    return seconds, usage.ru_maxrss * 1024, out


def warm(path: Path) -> None:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(16 * MiB):
                pass


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def s3_usage(prefix: str) -> int:
    import boto3

    client = boto3.client("s3", endpoint_url=S3_ENDPOINT, aws_access_key_id=S3_ACCESS,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/"):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def s3_bucket() -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=S3_ENDPOINT, aws_access_key_id=S3_ACCESS,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
    try:
        client.head_bucket(Bucket=BUCKET)
    except client.exceptions.ClientError:
        client.create_bucket(Bucket=BUCKET)


def s3_ceiling(nbytes: int = 512 * MiB, threads: int = 8) -> float:
    """MB/s of plain 4 MiB PUTs (boto3, ``threads`` at once) to the S3 server: what any client can reach there."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=S3_ENDPOINT, aws_access_key_id=S3_ACCESS,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                        max_pool_connections=threads))
    prefix = f"bench-{uuid.uuid4().hex[:10]}/ceiling"
    blobs = [os.urandom(CHUNK) for _ in range(4)]
    n = nbytes // CHUNK
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"{prefix}/{i}", Body=blobs[i % 4]), range(n)))
    seconds = time.perf_counter() - t
    s3_drop(prefix)
    return n * CHUNK / seconds / 1e6


def s3_drop(prefix: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=S3_ENDPOINT, aws_access_key_id=S3_ACCESS,
                          aws_secret_access_key=S3_SECRET, region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def make_images(work: Path, size: int, runs: int, seed: int) -> tuple[Path, Path, Path]:
    rnd = random.Random(seed)
    base = work / "base.img"
    with open(base, "wb") as fh:
        left = size
        while left:
            n = min(16 * MiB, left)
            fh.write(os.urandom(n))
            left -= n
    total = size // 100
    per = max(4096, total // runs)
    changed = []
    incr = work / "incr.img"
    shutil.copyfile(base, incr)
    with open(incr, "r+b") as fh:
        for _ in range(runs):
            off = rnd.randrange(0, size - per) // 4096 * 4096
            fh.seek(off)
            fh.write(os.urandom(per))
            changed.append((off, per))
    ranges = work / "changed.json"
    ranges.write_text(json.dumps(changed))
    return base, incr, ranges


class OpenCSBS:
    def __init__(self, work: Path, threads: int, encrypted: bool):
        self.name = "opencsbs+aes" if encrypted else "opencsbs"
        self.work = work / self.name
        self.work.mkdir(parents=True)
        self.threads = threads
        self.key = None
        if encrypted:
            self.key = self.work / "bank.key"
            self.key.write_text(os.urandom(32).hex())
        self.source = {"kind": "local", "path": str(self.work / "source"), "key": str(self.key or "")}

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, __file__, "_inner", *args, "--threads", str(self.threads)]

    def prepare(self, base: Path, incr: Path, ranges: Path) -> None:
        src = json.dumps(self.source)
        run(self._cmd("backup", "--source", src, "--image", str(base), "--index", "checkpoints/full/v"))
        run(self._cmd("backup", "--source", src, "--image", str(incr), "--index", "checkpoints/incr/v",
                      "--base", "checkpoints/full/v", "--changed", str(ranges)))

    def destination(self, where: str) -> dict:
        if where == "s3":
            return {"kind": "s3", "prefix": f"bench-{uuid.uuid4().hex[:10]}/{self.name}",
                    "key": str(self.key or "")}
        return {"kind": "local", "path": str(self.work / "dest"), "key": str(self.key or "")}

    def copy(self, dest: dict, which: str) -> tuple[float, int, dict]:
        warm(Path(self.source["path"]))
        secs, rss, out = run(self._cmd("copy", "--source", json.dumps(self.source), "--target", json.dumps(dest),
                                       "--index", f"checkpoints/{which}/v"), capture=True)
        return secs, rss, json.loads(out)

    def new_chunks(self) -> tuple[int, int]:
        return new_chunk_bytes(self.source, "checkpoints/full/v", "checkpoints/incr/v")


class Restic:
    name = "restic"

    def __init__(self, work: Path):
        self.work = work / "restic"
        self.work.mkdir(parents=True)
        self.source = self.work / "source"
        self.snapshots: dict[str, str] = {}

    def env(self) -> dict:
        env = {"RESTIC_PASSWORD": "benchmark-password", "RESTIC_FROM_PASSWORD": "benchmark-password",
               "RESTIC_CACHE_DIR": str(self.work / "cache")}
        if S3_ENDPOINT:
            env |= {"AWS_ACCESS_KEY_ID": S3_ACCESS, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                    "AWS_DEFAULT_REGION": "us-east-1"}
        return env

    def prepare(self, base: Path, incr: Path, ranges: Path) -> None:
        run(["restic", "-r", str(self.source), "init", "-q"], env=self.env())
        stage = self.work / "stage" / "disk.img"  # the same path in both snapshots: the full is the parent
        stage.parent.mkdir()
        for which, image in (("full", base), ("incr", incr)):
            if stage.exists():
                stage.unlink()
            os.link(image, stage)
            run(["restic", "-r", str(self.source), "backup", "-q", "--host", "bench", "--tag", which, str(stage)],
                env=self.env())
            _, _, out = run(["restic", "-r", str(self.source), "snapshots", "--json", "--tag", which],
                            env=self.env(), capture=True)
            self.snapshots[which] = json.loads(out)[0]["id"]

    def destination(self, where: str) -> dict:
        if where == "s3":
            prefix = f"bench-{uuid.uuid4().hex[:10]}/restic"
            repo = f"s3:{S3_ENDPOINT}/{BUCKET}/{prefix}"
            dest = {"kind": "s3", "repo": repo, "prefix": prefix}
        else:
            dest = {"kind": "local", "repo": str(self.work / "dest"), "path": str(self.work / "dest")}
        run(["restic", "-r", dest["repo"], "init", "-q", "--from-repo", str(self.source), "--copy-chunker-params"],
            env=self.env())
        return dest

    def copy(self, dest: dict, which: str) -> tuple[float, int, dict]:
        warm(self.source)
        secs, rss, _ = run(["restic", "-r", dest["repo"], "copy", "-q", "--from-repo", str(self.source),
                            self.snapshots[which]], env=self.env())
        return secs, rss, {}


def usage(dest: dict) -> int:
    return s3_usage(dest["prefix"]) if dest["kind"] == "s3" else du(Path(dest["path"]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_inner":
        inner(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G", help="image size (e.g. 2G, 512M); default 2G")
    ap.add_argument("--tools", default="opencsbs,opencsbs+aes,restic")
    ap.add_argument("--threads", type=int, default=2, help="opencsbs worker threads (default 2)")
    ap.add_argument("--change-runs", type=int, default=4, help="runs the 1 %% change is split into (default 4)")
    ap.add_argument("--no-s3", action="store_true", help="local destinations only")
    ap.add_argument("--workdir", default=None, help="scratch folder (default $OPENCSBS_WORK/bench-repl)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(args.workdir or Path(os.environ.get("OPENCSBS_WORK", ROOT / ".work")) / "bench-repl")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "restic" in wanted and not shutil.which("restic"):
        sys.exit("restic not found: apt-get install restic")
    wheres = ["local"] + (["s3"] if S3_ENDPOINT and S3_ACCESS and S3_SECRET and not args.no_s3 else [])
    _, _, version = run(["restic", "version"], capture=True) if "restic" in wanted else (0, 0, "")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# image of {size / MiB:.0f} MiB, random bytes; 1 % change in {args.change_runs} runs; destinations: "
          f"{', '.join(wheres)}; {os.cpu_count()} CPUs; opencsbs {args.threads} threads; {version.strip()}",
          flush=True)
    if "s3" in wheres:
        s3_bucket()
        print(f"# S3 server: plain 4 MiB PUTs, 8 at once: {s3_ceiling():.0f} MB/s (the ceiling of any copy to it)",
              flush=True)
    base, incr, ranges = make_images(work, size, args.change_runs, args.seed)
    tools = []
    for name in wanted:
        if name in ("opencsbs", "opencsbs+aes"):
            tools.append(OpenCSBS(work, args.threads, encrypted=name == "opencsbs+aes"))
        elif name == "restic":
            tools.append(Restic(work))
        else:
            sys.exit(f"unknown tool {name}")
    for tool in tools:
        t = time.perf_counter()
        tool.prepare(base, incr, ranges)
        print(f"# {tool.name}: source prepared (full + incremental backup) in {time.perf_counter() - t:.1f} s",
              flush=True)
    incr_bytes = size // 100 // args.change_runs * args.change_runs
    rows: list[dict] = []
    for where in wheres:
        for tool in tools:
            dest = tool.destination(where)
            for which in ("full", "incr"):
                before = usage(dest)
                secs, rss, out = tool.copy(dest, which)
                grown = usage(dest) - before
                logical = size if which == "full" else incr_bytes
                row = {"tool": tool.name, "to": where, "copy": which, "seconds": secs, "rss": rss, "grown": grown,
                       "sent_bytes": out.get("sent_bytes"), "mbps": size / secs / 1e6}
                rows.append(row)
                sent = f"sent {out['sent_bytes'] / MiB:8.1f} MiB ({out['sent_chunks']} chunks), " \
                    if out else " " * 34
                print(f"{tool.name:13s} -> {where:5s} {which:5s} {secs:7.2f} s {row['mbps']:7.0f} MB/s of the "
                      f"image  {sent}destination +{grown / MiB:8.1f} MiB  peak RSS {rss / 1e6:5.0f} MB  "
                      f"(changed bytes {logical / MiB:.1f} MiB)", flush=True)
            if dest["kind"] == "s3":
                s3_drop(dest["prefix"])

    def get(tool: str, where: str, which: str) -> dict | None:
        return next((r for r in rows if r["tool"] == tool and r["to"] == where and r["copy"] == which), None)

    print("\n# ratios: throughput (image bytes per second of wall time) opencsbs / restic; target >= 3x")
    for ours in ("opencsbs", "opencsbs+aes"):
        for where in wheres:
            parts = []
            for which in ("full", "incr"):
                a, b = get(ours, where, which), get("restic", where, which)
                if a and b:
                    parts.append(f"{which} {a['mbps'] / b['mbps']:.1f}x")
            if parts:
                print(f"{ours:13s} vs restic -> {where:5s}: " + ", ".join(parts))
    print("\n# incremental copy: bytes sent vs the incremental's new chunks (stored size in the source bank)")
    for tool in tools:
        if not isinstance(tool, OpenCSBS):
            continue
        count, nbytes = tool.new_chunks()
        for where in wheres:
            r = get(tool.name, where, "incr")
            if r:
                print(f"{tool.name:13s} -> {where:5s}: sent {r['sent_bytes'] / MiB:.1f} MiB, destination grew "
                      f"{r['grown'] / MiB:.1f} MiB; new chunks {count} = {nbytes / MiB:.1f} MiB "
                      f"({r['sent_bytes'] / nbytes:.2f}x)" if nbytes else "")
    for where in wheres:
        r = get("restic", where, "incr")
        if r:
            print(f"{'restic':13s} -> {where:5s}: destination grew {r['grown'] / MiB:.1f} MiB")
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    for p in work.iterdir():
        if p.name != "results.json":
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()


if __name__ == "__main__":
    main()
