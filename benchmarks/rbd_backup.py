#!/usr/bin/env python3
"""RBD backup benchmark: opencsbs against Benji and against ``rbd export``/``rbd export-diff`` piped into restic,
on the same RBD image of a real Ceph cluster, in the same run.

    .venv/bin/python benchmarks/rbd_backup.py --ceph-conf /path/ceph.conf --client admin --pool rbd
    .venv/bin/python benchmarks/rbd_backup.py --size 512M --tools opencsbs,restic   # smaller, fewer peers
    # or take the cluster from the test stack: . $OPENCSBS_WORK/env/ceph.env && .venv/bin/python benchmarks/rbd_backup.py

The cluster comes from ``--ceph-conf``/``--client``/``--keyring``/``--pool`` or the test stack's variables
``OPENCSBS_TEST_CEPH_CONF``, ``_USER``, ``_KEYRING``, ``_POOL``. The interpreter needs the ``rados`` and ``rbd``
modules (Debian ``python3-rados``/``python3-rbd``; in a venv, symlink their ``.so`` files into site-packages).

The image (created and deleted by this script): ``--size`` (2 GiB), features layering, exclusive-lock,
object-map, fast-diff, deep-flatten (what Cinder's RBD driver gives its volumes). First half random bytes, second
half zero bytes, every byte written (so every object exists and no tool can skip it as a hole); snapshot ``s1``.
Then 1 % of the image is rewritten in 64 KiB writes at distinct random 64 KiB-aligned offsets (``--write-size``);
snapshot ``s2``. Every tool backs up these same two snapshots.

Operations per tool, in this order: full backup of ``s1``; incremental backup of ``s2`` on top of it; restore of
``s2`` (the incremental: the whole chain) into a new image, compared byte for byte with ``s2`` (SHA-256 through
librbd, outside the timed part), then deleted.

  opencsbs     the bank (``Bank.backup_volume``/``restore_volume``, as the engine's steps call it) fed by
               ``opencsbs.clouds.rbd``'s reader of the snapshot; the incremental gets the snapshot diff
               (``diff_iterate`` s1 -> s2) as changed ranges and the full backup as base; the restore writes
               through its image writer. Local bank folder, 4 MiB chunks, BLAKE3, zstd 1, ``--threads`` workers.
               Each operation runs in its own process (wall time includes interpreter start; "in process" is the
               time a running worker spends).
  benji        Benji 0.17.0 (PyPI ``benji``, own venv: ``--install-benji VENV`` makes it), the ``rbdaio`` io module, a file storage, SQLite
               database, 4 MiB blocks, zstd level 1, its default parallelism. Its documented RBD workflow:
               ``rbd diff --whole-object [--from-snap s1] image@snap --format=json`` as hints, then
               ``benji backup --snapshot S --rbd-hints H [--base-version V] rbd:pool/image@snap``; restore with
               ``benji restore --sparse V rbd:pool/new``. The hints' ``rbd diff`` is inside the timed part.
  restic       ``rbd export image@s1 - | restic backup --stdin`` (full); incremental as ``rbd export-diff
               --from-snap s1 image@s2 - | restic backup --stdin``, and as a second row the whole ``s2``
               re-exported (restic deduplicates it against the full); restore of ``s2`` as
               ``restic dump | rbd import`` of the full, ``rbd snap create @s1``, ``restic dump | rbd
               import-diff`` of the diff. Debian package ``restic`` (always encrypted, compression auto).

Printed per row: wall seconds, throughput (image bytes / seconds), bytes read from the cluster where the tool
says (or the diff it asked for), bytes stored in its repository; then the ratios: opencsbs / Benji and
opencsbs / restic throughput, each incremental's time as a percentage of the same tool's full backup, and its
reads against the changed extents (the exact ``diff_iterate`` sum). The machine's load average is printed at
start and end: the figures mean little without it.

Targets (issue 10): full backup >= 2x Benji's throughput; the incremental's time <= 5 % of the full backup's,
its reads proportional to the changed extents.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

MiB = 1 << 20
KiB = 1 << 10
ROOT = Path(__file__).resolve().parent.parent
IMAGE_FEATURES = ("RBD_FEATURE_LAYERING", "RBD_FEATURE_EXCLUSIVE_LOCK", "RBD_FEATURE_OBJECT_MAP",
                  "RBD_FEATURE_FAST_DIFF", "RBD_FEATURE_DEEP_FLATTEN")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _opencsbs_path() -> None:
    """Import opencsbs from PYTHONPATH/the venv when it is there, else from this checkout's src/."""
    if importlib.util.find_spec("opencsbs") is None:
        sys.path.insert(0, str(ROOT / "src"))


class Cluster:
    """The Ceph client settings, for librados in this process and for the ``rbd`` command line."""

    def __init__(self, conf: str, user: str, keyring: str | None, pool: str):
        self.conf, self.user, self.keyring, self.pool = conf, user.removeprefix("client."), keyring, pool

    def cli(self) -> list[str]:
        out = ["--conf", self.conf, "--id", self.user]
        return out + (["--keyring", self.keyring] if self.keyring else [])

    def connect(self):
        import rados

        conf = {"keyring": self.keyring} if self.keyring else {}
        cluster = rados.Rados(conffile=self.conf, rados_id=self.user, conf=conf)
        cluster.connect(timeout=30)
        return cluster, cluster.open_ioctx(self.pool)

    def inner_args(self) -> list[str]:
        out = ["--ceph-conf", self.conf, "--client", self.user, "--pool", self.pool]
        return out + (["--keyring", self.keyring] if self.keyring else [])


# --- inner operations of opencsbs (in a child process, so that its wall time and peak RSS are its own) -------------
def inner(argv: list[str]) -> None:
    _opencsbs_path()
    from opencsbs.bank import Bank, Codec, LocalStore
    from opencsbs.clouds import rbd as ocrbd

    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["backup", "restore"])
    p.add_argument("--bank", required=True)
    p.add_argument("--ceph-conf", required=True)
    p.add_argument("--client", required=True)
    p.add_argument("--keyring")
    p.add_argument("--pool", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--snap")
    p.add_argument("--from-snap")
    p.add_argument("--index", required=True)
    p.add_argument("--base")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=4 * MiB)
    a = p.parse_args(argv)
    bank = Bank(LocalStore(a.bank), Codec(None, level=1), threads=a.threads, chunk_size=a.chunk_size)
    cluster = ocrbd.Cluster(a.ceph_conf, a.client, a.keyring)
    t = time.perf_counter()
    out: dict = {}
    if a.op == "backup":
        changed = None
        if a.from_snap:  # what the engine does for an incremental: the snapshot diff, then a focused reader
            changed = cluster.changed_ranges(a.pool, a.image, a.snap, a.from_snap)
            out["diff_seconds"] = time.perf_counter() - t
            out["changed_bytes"] = sum(n for _o, n in changed)
        reader = cluster.open_reader(a.pool, a.image, a.snap, focus=changed)
        try:
            stats = bank.backup_volume(reader, a.index, base_index=a.base, changed_ranges=changed)
        finally:
            reader.close()
        out.update(seconds=time.perf_counter() - t, stored=stats.stored_bytes, read=reader.bytes_read,
                   bank_read=stats.read_bytes)
    else:
        writer = cluster.open_writer(a.pool, a.image)
        try:
            rs = bank.restore_volume(a.index, writer)
        finally:
            writer.close()
        out.update(seconds=time.perf_counter() - t, written=rs.written_bytes)
    bank.close()
    cluster.close()
    print(json.dumps(out))


# --- outer harness ---------------------------------------------------------------------------------------------
def run(cmd: list[str] | str, env: dict | None = None, capture: bool = False, shell: bool = False) \
        -> tuple[float, int, str]:
    """Run ``cmd`` (a pipeline when ``shell``); returns (wall seconds, peak RSS in bytes, stdout)."""
    t = time.perf_counter()
    full_env = {**os.environ, **(env or {})}
    if shell:
        cmd = ["bash", "-o", "pipefail", "-c", cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=full_env)
    err_buf: list[bytes] = []
    reader = threading.Thread(target=lambda: err_buf.append(proc.stderr.read()))
    reader.start()
    out = proc.stdout.read().decode() if capture else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    reader.join()
    seconds = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = b"".join(err_buf).decode(errors="replace")
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} failed ({code}): "
                           f"{err[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, out


def du(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def image_sha256(ioctx, name: str, snap: str | None = None, inflight: int = 8, block: int = 4 * MiB) -> str:
    """SHA-256 of an image (or snapshot), read with ``inflight`` aio reads of ``block`` bytes."""
    import rbd

    with rbd.Image(ioctx, name, snapshot=snap, read_only=True) as img:
        size = img.size()
        h = hashlib.sha256()
        results: dict[int, bytes] = {}
        cond = threading.Condition()
        nxt = 0
        pending = 0
        off = 0
        while nxt < size:
            while pending < inflight and off < size:
                o = off

                def done(c, data, o=o):
                    with cond:
                        results[o] = data if c.get_return_value() >= 0 else None
                        cond.notify()

                img.aio_read(o, min(block, size - o), done)
                pending += 1
                off += block
            with cond:
                while nxt not in results:
                    cond.wait()
                data = results.pop(nxt)
            if data is None:
                raise RuntimeError(f"reading {name} at {nxt} failed")
            pending -= 1
            h.update(data)
            nxt += block
        return h.hexdigest()


def make_image(ioctx, name: str, size: int, write_size: int, change: float, seed: int) -> tuple[int, int]:
    """Create ``name``: half random, half zeros (all written), snapshot s1; rewrite ``change`` of it in writes of
    ``write_size`` bytes at distinct aligned random offsets; snapshot s2. Returns (number of writes, bytes)."""
    import rbd

    features = 0
    for f in IMAGE_FEATURES:
        features |= getattr(rbd, f)
    rbd.RBD().create(ioctx, name, size, old_format=False, features=features)
    half = size // 2 // MiB * MiB
    block = 4 * MiB
    zeros = bytes(block)
    def wait(c) -> None:
        c.wait_for_complete_and_cb()
        if c.get_return_value() < 0:
            raise RuntimeError(f"writing {name} failed: {os.strerror(-c.get_return_value())}")

    with rbd.Image(ioctx, name) as img:
        inflight: list = []
        for off in range(0, size, block):
            n = min(block, size - off)
            data = os.urandom(n) if off < half else zeros[:n]
            inflight.append(img.aio_write(data, off, lambda _c: None))
            if len(inflight) >= 8:
                wait(inflight.pop(0))
        for c in inflight:
            wait(c)
        img.flush()
        img.create_snap("s1")
        rnd = random.Random(seed)
        count = max(1, int(size * change) // write_size)
        slots = rnd.sample(range(size // write_size), count)
        inflight = []
        for slot in slots:
            inflight.append(img.aio_write(rnd.randbytes(write_size), slot * write_size, lambda _c: None))
            if len(inflight) >= 16:
                wait(inflight.pop(0))
        for c in inflight:
            wait(c)
        img.flush()
        img.create_snap("s2")
    return count, count * write_size


def diff_extents(ioctx, name: str, snap: str, from_snap: str | None, whole_object: bool = False) -> list:
    import rbd

    out: list = []
    with rbd.Image(ioctx, name, snapshot=snap, read_only=True) as img:
        img.diff_iterate(0, img.size(), from_snap, lambda o, n, exists: out.append((o, n, exists)),
                         whole_object=whole_object)
    return out


def remove_image(ioctx, name: str) -> None:
    import rbd

    try:
        with rbd.Image(ioctx, name) as img:
            for s in list(img.list_snaps()):
                if img.is_protected_snap(s["name"]):
                    img.unprotect_snap(s["name"])
                img.remove_snap(s["name"])
        rbd.RBD().remove(ioctx, name)
    except rbd.ImageNotFound:
        pass


class Tool:
    name = ""

    def __init__(self, work: Path, cluster: Cluster):
        self.work = work / self.name.replace("/", "-")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.cluster = cluster
        self.extra: dict = {}

    def stored(self) -> int:
        raise NotImplementedError


class OpenCSBS(Tool):
    def __init__(self, work: Path, cluster: Cluster, threads: int, chunk_size: int | None = None):
        self.name = "opencsbs" if chunk_size is None else f"opencsbs/{chunk_size // KiB}K"
        super().__init__(work, cluster)
        self.threads = threads
        self.chunk_size = chunk_size or 4 * MiB
        self.bank = self.work / "bank"

    def _inner(self, *args: str) -> tuple[float, int, dict]:
        cmd = [sys.executable, __file__, "_inner", *args, "--bank", str(self.bank), "--threads", str(self.threads),
               "--chunk-size", str(self.chunk_size), *self.cluster.inner_args()]
        secs, rss, out = run(cmd, capture=True)
        return secs, rss, json.loads(out.strip().splitlines()[-1])

    def stored(self) -> int:
        return du(self.bank)

    def full(self, image: str):
        secs, rss, out = self._inner("backup", "--image", image, "--snap", "s1", "--index", "vol/s1")
        return secs, rss, out

    def incremental(self, image: str):
        return self._inner("backup", "--image", image, "--snap", "s2", "--from-snap", "s1", "--index", "vol/s2",
                           "--base", "vol/s1")

    def restore(self, target: str, size: int):
        import rbd

        _cl, ioctx = self.cluster.connect()
        t = time.perf_counter()
        rbd.RBD().create(ioctx, target, size, old_format=False, features=rbd.RBD_FEATURE_LAYERING
                         | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                         | rbd.RBD_FEATURE_DEEP_FLATTEN)
        create_s = time.perf_counter() - t
        ioctx.close()
        _cl.shutdown()
        secs, rss, out = self._inner("restore", "--image", target, "--index", "vol/s2")
        return secs + create_s, rss, out


class Benji(Tool):
    name = "benji"

    def __init__(self, work: Path, cluster: Cluster, exe: str):
        super().__init__(work, cluster)
        self.exe = exe
        self.storage = self.work / "storage"
        self.db = self.work / "benji.sqlite"
        self.storage.mkdir()
        self.config = self.work / "benji.yaml"
        self.config.write_text(json.dumps({  # JSON is YAML
            "configurationVersion": "1",
            "databaseEngine": f"sqlite:///{self.db}",
            "defaultStorage": "file",
            "logFile": str(self.work / "benji.log"),
            "blockSize": 4 * MiB,
            "storages": [{"name": "file", "storageId": 1, "module": "file",
                          "configuration": {"path": str(self.storage), "activeTransforms": ["zstd"]}}],
            "transforms": [{"name": "zstd", "module": "zstd", "configuration": {"level": 1}}],
            "ios": [{"name": "rbd", "module": "rbdaio",
                     "configuration": {"cephConfigFile": cluster.conf, "clientIdentifier": cluster.user,
                                       "newImageFeatures": list(IMAGE_FEATURES)}}],
        }, indent=1))
        self.versions: dict[str, str] = {}
        self._benji("database-init")

    def url(self, image: str, snap: str | None = None) -> str:
        u = f"rbd:{self.cluster.pool}/{image}" + (f"@{snap}" if snap else "")
        return u + (f"?keyring={self.cluster.keyring}" if self.cluster.keyring else "")

    def _benji(self, *args: str) -> str:
        return run([self.exe, "-c", str(self.config), "--log-level", "WARNING", "-m", *args], capture=True,
                   env={"PYTHONPATH": ""})[2]

    def stored(self) -> int:
        return du(self.storage) + du(self.db)

    def _backup(self, image: str, snap: str, base_snap: str | None):
        hints = self.work / f"hints-{snap}.json"
        rbd = " ".join(["rbd", *self.cluster.cli()])
        diff = f"{rbd} diff --whole-object --format=json {self.cluster.pool}/{image}@{snap}"
        if base_snap:
            diff += f" --from-snap {base_snap}"
        cmd = f"{diff} > {hints} && {self.exe} -c {self.config} --log-level WARNING -m backup -s {snap} -r {hints}"
        if base_snap:
            cmd += f" -f {self.versions[base_snap]}"
        cmd += f" '{self.url(image, snap)}' bench-volume"
        secs, rss, out = run(cmd, shell=True, capture=True, env={"PYTHONPATH": ""})
        version = json.loads(out)["versions"][0]
        self.versions[snap] = version["uid"]
        return secs, rss, {"read": version.get("bytes_read"), "tool_seconds": version.get("duration")}

    def full(self, image: str):
        return self._backup(image, "s1", None)

    def incremental(self, image: str):
        return self._backup(image, "s2", "s1")

    def restore(self, target: str, size: int):
        secs, rss, _ = run([self.exe, "-c", str(self.config), "--log-level", "WARNING", "restore", "--sparse",
                            self.versions["s2"], self.url(target)], env={"PYTHONPATH": ""})
        return secs, rss, {}


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path, cluster: Cluster):
        super().__init__(work, cluster)
        self.repo = self.work / "repo"
        self.env = {"RESTIC_PASSWORD": "benchmark-password", "RESTIC_CACHE_DIR": str(self.work / "cache"),
                    "RESTIC_REPOSITORY": str(self.repo)}
        run(["restic", "init", "-q"], env=self.env)
        self.snapshots: dict[str, str] = {}
        self.rbd = " ".join(["rbd", *cluster.cli()])

    def stored(self) -> int:
        return du(self.repo)

    def _backup(self, key: str, producer: str, filename: str):
        cmd = f"{producer} | restic backup --json --host bench --stdin --stdin-filename {filename}"
        secs, rss, out = run(cmd, shell=True, env=self.env, capture=True)
        summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]
        self.snapshots[key] = summary["snapshot_id"]
        return secs, rss, {"restic": summary}

    def full(self, image: str):
        secs, rss, info = self._backup("full", f"{self.rbd} export --no-progress {self.cluster.pool}/{image}@s1 -",
                                       "disk.img")
        info["read"] = None  # the whole image, set by the caller
        return secs, rss, info

    def incremental(self, image: str):
        return self._backup("diff", f"{self.rbd} export-diff --no-progress --from-snap s1 "
                                    f"{self.cluster.pool}/{image}@s2 -", "disk.s1-s2.diff")

    def reexport(self, image: str):
        return self._backup("reexport", f"{self.rbd} export --no-progress {self.cluster.pool}/{image}@s2 -",
                            "disk.img")

    def restore(self, target: str, size: int):
        p = self.cluster.pool
        cmd = (f"restic dump {self.snapshots['full']} /disk.img | {self.rbd} import --no-progress - {p}/{target} && "
               f"{self.rbd} snap create --no-progress {p}/{target}@s1 && "
               f"restic dump {self.snapshots['diff']} /disk.s1-s2.diff | "
               f"{self.rbd} import-diff --no-progress - {p}/{target}")
        secs, rss, _ = run(cmd, shell=True, env=self.env)
        return secs, rss, {}


#: Benji 0.17.0's dependencies as its metadata pins them, but ruamel.yaml: its pin (<0.16) has a C extension that
#: does not build on Python >= 3.11 (longintrepr.h moved); 0.17 still has the ``ruamel.yaml.load(f, Loader=...)``
#: Benji calls (0.18 removed it).
BENJI_REQUIREMENTS = [
    "ruamel.yaml>=0.17,<0.18", "PrettyTable>=0.7.2,<1", "sqlalchemy>=1.4.14,<2", "setproctitle>=1.1.8,<2",
    "python-dateutil>=2.6.0,<3", "alembic>=1.0.5,<2", "psycopg2-binary>=2.7.4,<3", "argcomplete>=1.9.4,<2",
    "sparsebitfield>=0.2.3,<1", "cerberus>=1.2,<2", "pycryptodome>=3.6.1,<4", "pyparsing>=2.3.0,<3",
    "semantic-version>=2.8.1,<3", "dateparser>=1.1.1,<2", "structlog>=19.1.0", "colorama>=0.4.1,<1",
    "diskcache>=3.0.6", "attrs>=21.4.0,<22", "zstandard>=0.9.0",
]


#: Benji's processes see none of opencsbs's PYTHONPATH
BENJI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def install_benji(venv: Path) -> Path:
    """Make a virtualenv at ``venv`` with Benji 0.17.0 from PyPI and this interpreter's rados/rbd modules linked
    in; returns its ``benji`` executable."""
    import rados
    import rbd

    exe = venv / "bin" / "benji"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *BENJI_REQUIREMENTS], check=True, env=BENJI_ENV)
    subprocess.run([*pip, "--no-deps", "benji==0.17.0"], check=True, env=BENJI_ENV)
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())
    for mod in (rados, rbd):
        src = Path(mod.__file__).resolve()
        link = site / src.name
        if not link.exists():
            link.symlink_to(src)
    subprocess.run([str(exe), "--help"], check=True, capture_output=True, env=BENJI_ENV)
    return exe


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_inner":
        inner(sys.argv[2:])
        return
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ceph-conf", default=env("OPENCSBS_TEST_CEPH_CONF", "/etc/ceph/ceph.conf"))
    ap.add_argument("--client", default=env("OPENCSBS_TEST_CEPH_USER", "admin"),
                    help="Ceph user id without 'client.' (default admin)")
    ap.add_argument("--keyring", default=env("OPENCSBS_TEST_CEPH_KEYRING"),
                    help="keyring file (default: what ceph.conf says)")
    ap.add_argument("--pool", default=env("OPENCSBS_TEST_CEPH_POOL", "rbd"))
    ap.add_argument("--size", default="2G", help="image size (e.g. 2G, 512M); default 2G")
    ap.add_argument("--write-size", default="64K", help="size of each scattered write of the 1 %% change")
    ap.add_argument("--change", type=float, default=1.0, help="percentage of the image rewritten (default 1)")
    ap.add_argument("--tools", default="opencsbs,benji,restic")
    ap.add_argument("--benji", default=env("BENJI", shutil.which("benji") or "benji"),
                    help="the benji executable (its own venv, see --install-benji)")
    ap.add_argument("--install-benji", metavar="VENV", default=None,
                    help="make VENV with Benji 0.17.0 from PyPI (if not there yet) and use its benji")
    ap.add_argument("--threads", type=int, default=2, help="opencsbs bank worker threads (default 2)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default $OPENCSBS_WORK/rbd-bench)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder and the image")
    args = ap.parse_args()
    size = parse_size(args.size)
    write_size = parse_size(args.write_size)
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in wanted:
        if t not in ("opencsbs", "benji", "restic") and not t.startswith("opencsbs/"):
            sys.exit(f"unknown tool {t}")
    if "restic" in wanted and not shutil.which("restic"):
        sys.exit("restic not found: apt-get install restic")
    if args.install_benji:
        args.benji = str(install_benji(Path(args.install_benji).resolve()))
    if "benji" in wanted and not shutil.which(args.benji):
        sys.exit(f"benji not found ({args.benji}): --install-benji VENV makes one, or leave it out with --tools")
    if not shutil.which("rbd"):
        sys.exit("rbd not found: apt-get install ceph-common")
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        sys.exit("the rados/rbd Python modules are missing: apt-get install python3-rados python3-rbd (in a venv, "
                 "symlink /usr/lib/python3/dist-packages/{rados,rbd}.cpython-*.so into its site-packages)")
    if any(t.startswith("opencsbs") for t in wanted):
        _opencsbs_path()
        if importlib.util.find_spec("opencsbs.clouds.rbd") is None:
            sys.exit("this opencsbs has no opencsbs.clouds.rbd (the RBD data side): nothing to measure")
    cluster = Cluster(args.ceph_conf, args.client, args.keyring, args.pool)
    work = Path(args.workdir or Path(env("OPENCSBS_WORK", str(ROOT / ".work"))) / "rbd-bench")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    image = f"opencsbs-bench-{os.getpid()}"
    rados_cluster, ioctx = cluster.connect()
    rows: list[dict] = []
    try:
        version = subprocess.run(["rbd", "--version"], check=False, capture_output=True, text=True).stdout.split()
        print(f"# load average at start: {loadavg()} ({os.cpu_count()} CPUs); pool {args.pool}; "
              f"Ceph {version[2] if len(version) > 2 else '?'}", flush=True)
        t = time.perf_counter()
        writes, written = make_image(ioctx, image, size, write_size, args.change / 100, args.seed)
        exact = diff_extents(ioctx, image, "s2", "s1")
        changed = sum(n for _o, n, _e in exact)
        objects = len(diff_extents(ioctx, image, "s2", "s1", whole_object=True))
        print(f"# image {image}: {size / MiB:.0f} MiB, first half random, second half zeros (all written), "
              f"{time.perf_counter() - t:.1f} s to write; change: {writes} writes of {write_size // KiB} KiB "
              f"({written / MiB:.1f} MiB, {written / size * 100:.2f} %) -> diff_iterate s1..s2: {len(exact)} "
              f"extents, {changed / MiB:.1f} MiB, in {objects} of {-(-size // (4 * MiB))} 4 MiB objects",
              flush=True)
        want = image_sha256(ioctx, image, "s2")

        def record(tool: str, op: str, secs: float, rss: int, read: int | None, stored: int | None,
                   extra: str = "", **more) -> dict:
            row = {"tool": tool, "op": op, "seconds": secs, "mbps": size / secs / 1e6, "rss_mb": rss / 1e6,
                   "read": read, "stored": stored, **more}
            rows.append(row)
            rd = f"{read / MiB:8.1f}" if read is not None else " " * 8
            st = f"{stored / MiB:8.1f}" if stored is not None else " " * 8
            print(f"{tool:14s} {op:26s} {secs:7.2f} s {row['mbps']:7.0f} MB/s  read {rd} MiB  stored {st} MiB  "
                  f"peak RSS {rss / 1e6:5.0f} MB{extra}", flush=True)
            return row

        tools: list[Tool] = []
        for name in wanted:
            if name == "opencsbs":
                tools.append(OpenCSBS(work, cluster, args.threads))
            elif name.startswith("opencsbs/"):
                tools.append(OpenCSBS(work, cluster, args.threads, parse_size(name.split("/", 1)[1])))
            elif name == "benji":
                tools.append(Benji(work, cluster, args.benji))
            else:
                tools.append(Restic(work, cluster))
        print(f"{'tool':14s} {'operation':26s} {'wall':>9s} {'image/s':>12s}", flush=True)
        for tool in tools:
            before = tool.stored()
            secs, rss, info = tool.full(image)
            extra = f"  (in process {info['seconds']:.2f} s)" if "seconds" in info else ""
            if info.get("tool_seconds") is not None:
                extra = f"  (its own duration {info['tool_seconds']} s)"
            read = info.get("read")
            record(tool.name, "full backup (s1)", secs, rss, size if read is None else read,
                   tool.stored() - before, extra, in_process=info.get("seconds"))
            before = tool.stored()
            secs, rss, info = tool.incremental(image)
            extra = ""
            if "seconds" in info:
                extra = f"  (in process {info['seconds']:.2f} s, of which diff {info['diff_seconds']:.2f} s)"
            if info.get("tool_seconds") is not None:
                extra = f"  (its own duration {info['tool_seconds']} s)"
            read = info.get("read")
            if tool.name == "restic":
                read = changed  # export-diff reads exactly the changed extents
            record(tool.name, "incremental (s2)", secs, rss, read, tool.stored() - before, extra,
                   in_process=info.get("seconds"))
            if isinstance(tool, Restic):
                before = tool.stored()
                secs, rss, info = tool.reexport(image)
                record(tool.name, "incr. (s2 re-exported)", secs, rss, size, tool.stored() - before)
            target = f"{image}-restore-{tool.name}"
            try:
                secs, rss, info = tool.restore(target, size)
                got = image_sha256(ioctx, target)
                ok = got == want
                extra = f"  (in process {info['seconds']:.2f} s)" if "seconds" in info else ""
                record(tool.name, "restore s2" + ("" if ok else " MISMATCH"), secs, rss, None, None, extra,
                       in_process=info.get("seconds"), byte_exact=ok)
                if not ok:
                    print(f"!! {tool.name} restored s2 differently", flush=True)
            finally:
                remove_image(ioctx, target)

        def get(tool: str, op: str) -> dict | None:
            return next((r for r in rows if r["tool"] == tool and r["op"].startswith(op)), None)

        print(f"\n# ratios (throughput opencsbs / peer; incremental / full of the same tool; reads / changed "
              f"extents of {changed / MiB:.1f} MiB)")
        for ours in [t.name for t in tools if t.name.startswith("opencsbs")]:
            for peer in ("benji", "restic"):
                for op in ("full backup", "restore"):
                    a, b = get(ours, op), get(peer, op)
                    if a and b:
                        print(f"{ours:14s} vs {peer:7s} {op:12s}: {a['mbps'] / b['mbps']:.2f}x "
                              f"({a['mbps']:.0f} vs {b['mbps']:.0f} MB/s)")
        for tool in [t.name for t in tools]:
            full = get(tool, "full backup")
            for op in ("incremental", "incr. (s2 re-exported)"):
                inc = get(tool, op)
                if not (full and inc):
                    continue
                line = f"{tool:14s} {op:24s}: {inc['seconds'] / full['seconds'] * 100:5.1f} % of its full backup time"
                if inc.get("in_process") and full.get("in_process"):
                    line += f" (in process {inc['in_process'] / full['in_process'] * 100:.1f} %)"
                if inc["read"] is not None:
                    line += f"; reads {inc['read'] / MiB:.1f} MiB = {inc['read'] / changed:.1f}x the changed extents"
                if inc["stored"] is not None:
                    line += f"; stored {inc['stored'] / MiB:.1f} MiB"
                print(line)
        print(f"# load average at end: {loadavg()}")
        (work / "results.json").write_text(json.dumps({"size": size, "changed": changed, "writes": writes,
                                                       "rows": rows}, indent=1))
    finally:
        if not args.keep:
            remove_image(ioctx, image)
            for p in work.iterdir():
                if p.name != "results.json":
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        ioctx.close()
        rados_cluster.shutdown()


if __name__ == "__main__":
    main()
