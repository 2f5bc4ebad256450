"""Crash test: ``opencsbs worker`` processes SIGKILLed at random moments while they back up and restore.

Each job is hit while it runs: the test waits until a worker process has claimed it (its pid is in the job's
``owner``), lets it run for a random 0-0.1 s (snapshot, copy, commit or cleanup step) and SIGKILLs the process;
another worker takes the job over once its lease expires. Invariants, checked while workers die and at the end:
- no checkpoint_item reads ``available`` unless every one of its volume backups is ``available`` and its bank index
  is readable (no half-written data is referenced);
- every job ends ``done`` or ``failed``; every backup ``available`` or ``error``; no server lock or snapshot is
  left behind; the kills really interrupted jobs (some needed more than one attempt);
- every available backup restores byte-exact (SHA-256 of every byte) to the data it was taken from, also when the
  restoring workers are killed too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from sqlalchemy import select

from engine_helpers import (DB1, DB1_SYS, MIB, WEB1, WEB1_DATA, WEB1_SYS, digest, item_of, protect, random_bytes,
                            restore, write)
from opencsbs.db.models import CheckpointItem, Job, ResourceLock

pytestmark = pytest.mark.slow


class Workers:
    """Two ``opencsbs worker`` processes, restarted as they are killed."""

    def __init__(self, config, log, rng):
        self.config, self.log, self.rng = str(config), log, rng
        self.procs: dict[int, subprocess.Popen] = {}
        self.kills = 0

    def keep_two(self):
        self.procs = {pid: p for pid, p in self.procs.items() if p.poll() is None}
        while len(self.procs) < 2:
            p = subprocess.Popen([sys.executable, "-m", "opencsbs", "--config", self.config, "worker"],
                                 stdout=self.log, stderr=self.log, start_new_session=True)
            self.procs[p.pid] = p

    def kill(self, pid: int):
        p = self.procs.pop(pid, None)
        if p is not None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            self.kills += 1

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)


def _job(runtime, kind: str, target_id: str) -> Job:
    with runtime.sessions() as session:
        return session.scalars(select(Job).where(Job.kind == kind, Job.target_id == target_id)).one()


def _owner_pid(job: Job) -> int | None:
    try:
        return int(job.owner.split(":")[1]) if job.owner else None
    except (IndexError, ValueError):
        return None


def _hit(runtime, workers: Workers, kind: str, target_id: str, max_kills: int) -> None:
    """Kill the process running the job up to ``max_kills`` times at random moments, then let it finish."""
    kills = 0
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, "job never finished"
        workers.keep_two()
        job = _job(runtime, kind, target_id)
        if job.status in ("done", "failed"):
            return
        pid = _owner_pid(job)
        if kills < max_kills and job.status == "running" and pid in workers.procs \
                and job.lease_until is not None and workers.procs[pid].poll() is None:
            time.sleep(workers.rng.uniform(0.0, 0.1))
            job = _job(runtime, kind, target_id)
            if job.status == "running" and _owner_pid(job) == pid:  # still at work: this kill interrupts it
                workers.kill(pid)
                kills += 1
                _check_invariants(runtime)
        time.sleep(0.05)


def _check_invariants(runtime) -> dict[str, str]:
    statuses = {}
    with runtime.sessions() as session:
        for item in session.scalars(select(CheckpointItem)):
            statuses[item.id] = item.status
            if item.status in ("available", "waiting_restore", "restoring"):
                assert item.progress == 100 and item.protected_at is not None
                for vb in item.volume_backups:
                    assert vb.status == "available", (item.id, vb.id, vb.status)
                    assert runtime.bank.read_index(vb.index_name).size == vb.size_bytes
    return statuses


def test_workers_killed_at_random_steps(demo, runtime, tmp_path):
    client, headers = demo
    rng = random.Random(int(os.environ.get("OPENCSBS_CRASH_SEED", "4242")))
    settings = runtime.settings
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(settings.data_dir), "database_url": settings.db_url, "workers": 0,
        "engine": {"lease_seconds": 1.0, "poll_seconds": 0.05, "max_attempts": 6, "progress_seconds": 0.05},
        "bank": {"threads": 1},
    }))
    log = open(tmp_path / "workers.log", "ab")
    workers = Workers(config, log, rng)

    write(runtime, WEB1_SYS, 0, random_bytes(48 * MIB, 1))
    write(runtime, WEB1_DATA, 300 * MIB, random_bytes(32 * MIB, 2))
    write(runtime, DB1_SYS, 5 * MIB, random_bytes(40 * MIB, 3))
    expected: dict[str, dict[str, str]] = {}  # checkpoint id -> volume -> sha256 at backup time
    rounds = [(WEB1, [WEB1_SYS, WEB1_DATA]), (DB1, [DB1_SYS])] * 3
    try:
        for i, (server, volumes) in enumerate(rounds):
            r = protect(client, headers, server, incremental=bool(i % 3))
            assert r.status_code == 200, r.text
            cp = r.json()["checkpoint"]["id"]
            expected[cp] = {v: digest(runtime, v) for v in volumes}
            item_id = item_of(client, headers, cp)["id"]
            _hit(runtime, workers, "backup", item_id, max_kills=rng.randint(1, 3))
            for v in volumes:  # change some data before the next (incremental) backup
                write(runtime, v, rng.randrange(0, 900) * MIB, random_bytes(3 * MIB, 100 + i))

        statuses = _check_invariants(runtime)
        assert set(statuses.values()) <= {"available", "error"}, statuses
        assert list(statuses.values()).count("available") >= 3, statuses

        # restores, their workers killed too, must still end byte-exact
        for cp, hashes in expected.items():
            item = item_of(client, headers, cp)
            if item["status"] != "available":
                assert item["extend_info"]["fail_reason"], item
                continue
            r = restore(client, headers, item, item["resource_id"])
            assert r.status_code == 200, r.text
            _hit(runtime, workers, "restore", r.json()["restore"]["id"], max_kills=rng.randint(1, 2))
            rs = client.get(f"/v1/demo/restores/{r.json()['restore']['id']}", headers=headers).json()["restore"]
            if rs["status"] == "success":
                assert {v: digest(runtime, v) for v in hashes} == hashes, cp
            else:
                assert rs["status"] == "error" and rs["resources_reason"], rs
    finally:
        workers.stop()
        log.close()

    assert workers.kills >= 4  # at least one kill in most jobs (a job can end before its first kill lands)
    statuses = _check_invariants(runtime)
    assert set(statuses.values()) <= {"available", "error"}, statuses
    with runtime.sessions() as session:
        jobs = session.scalars(select(Job)).all()
        assert {j.status for j in jobs} <= {"done", "failed"}
        assert sum(1 for j in jobs if j.attempts > 1) >= 3, [(j.kind, j.status, j.attempts) for j in jobs]
        assert session.scalars(select(ResourceLock)).all() == []
    snapshots = runtime.driver.snapshots_dir
    assert not snapshots.exists() or list(snapshots.iterdir()) == []

    # `opencsbs bank gc` reclaims what the killed backups left unreferenced, `opencsbs bank verify` is clean
    for args in (["bank", "gc", "--grace", "0"], ["bank", "verify"]):
        done = subprocess.run([sys.executable, "-m", "opencsbs", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    report = runtime.bank.verify()
    assert report.ok and report.unreferenced_chunks == 0 and report.indexes_checked >= 3
