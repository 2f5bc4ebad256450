"""The engine's pieces: job claiming and leases, failure paths, and the sandbox driver's data side."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from engine_helpers import DB1, DB1_SYS, MIB, WEB1, WEB1_DATA, WEB1_SYS, item_of, protect, random_bytes, run_jobs, write
from opencsbs.clouds.base import CloudContext
from opencsbs.clouds.sandbox import volumes as vf
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, Job, ResourceLock
from opencsbs.engine.jobs import LeaseLost, claim_next, enqueue
from opencsbs.engine.worker import Worker


def _new_job(runtime):
    with transaction(runtime.sessions) as session:
        return enqueue(session, "delete", "demo", "no-checkpoint", state={"items": []}).id


def test_one_claim_wins_and_an_expired_lease_moves_on(runtime):
    job_id = _new_job(runtime)
    first = claim_next(runtime.sessions, "a", lease_seconds=30)
    assert first is not None and first.id == job_id and first.claim == 1
    assert claim_next(runtime.sessions, "b", lease_seconds=30) is None  # leased: nobody else gets it
    with transaction(runtime.sessions) as session:  # the lease runs out (worker a died)
        session.execute(update(Job).where(Job.id == job_id).values(lease_until=Job.lease_until - timedelta(hours=1)))
    second = claim_next(runtime.sessions, "b", lease_seconds=30)
    assert second is not None and second.claim == 2 and second.attempts == 2
    with pytest.raises(LeaseLost):  # a's late commit is refused...
        first.commit("drop")
    assert not first.heartbeat() and first.lost.is_set()
    second.commit("drop", {"x": 1})  # ...b's goes through
    with runtime.sessions() as session:
        job = session.get(Job, job_id)
        assert (job.step, job.owner, job.state) == ("drop", "b", {"items": [], "x": 1})


def test_concurrent_claims_on_many_threads(runtime):
    ids = {_new_job(runtime) for _ in range(12)}
    got: list[str] = []
    lock = threading.Lock()

    def grab(name):
        while True:
            job = claim_next(runtime.sessions, name, lease_seconds=60)
            if job is None:
                return
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)  # every job claimed exactly once


def test_a_failing_backup_ends_error_cleanly(demo, runtime, monkeypatch):
    client, headers = demo
    write(runtime, WEB1_SYS, 0, random_bytes(6 * MIB, 1))

    def broken(snapshot):
        raise OSError("disk on fire")

    monkeypatch.setattr(runtime.driver, "open_snapshot", broken)
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    run_jobs(runtime)
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "error"
    ext = item["extend_info"]
    assert ext["fail_op"] == "backup" and "disk on fire" in ext["fail_reason"]
    assert ext["fail_code"]["Code"] == 9999
    assert runtime.bank.list_indexes("checkpoints/") == []
    assert not any(runtime.driver.snapshots_dir.iterdir())
    with runtime.sessions() as session:
        assert session.scalars(select(ResourceLock)).all() == []
        assert session.scalars(select(Job)).one().status == "failed"
    monkeypatch.undo()
    assert protect(client, headers, WEB1).status_code == 200  # the server is free again
    run_jobs(runtime)


def test_a_job_interrupted_too_often_is_failed(demo, runtime):
    client, headers = demo
    cp = protect(client, headers, DB1).json()["checkpoint"]
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).values(attempts=runtime.settings.engine.max_attempts))
    run_jobs(runtime)
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "error" and "interrupted" in item["extend_info"]["fail_reason"]


def test_resume_after_each_step(demo, runtime):
    """Stop the job after each step (as a crash would) and let a fresh worker continue: same result."""
    client, headers = demo
    write(runtime, WEB1_DATA, 64 * MIB, random_bytes(5 * MIB, 4))
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    from opencsbs.engine import backup

    seen = []
    for _ in range(10):
        job = claim_next(runtime.sessions, "stepper", lease_seconds=30)
        if job is None:
            break
        runner = backup.STEPS[job.step]
        seen.append(job.step)
        runner(runtime, job)
        with transaction(runtime.sessions) as session:  # the worker vanishes; its lease expires
            session.execute(update(Job).values(lease_until=None))
    assert seen == ["start", "copy", "commit", "cleanup"]
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "available"


def test_snapshot_freezes_writers_and_tracks_changes(runtime, inventory):
    driver = runtime.driver
    ctx = CloudContext("demo")
    write(runtime, WEB1_SYS, 0, b"a" * MIB)
    first = driver.snapshot_server(ctx, WEB1, "snap-1")
    assert [v.volume_id for v in first.volumes] == [WEB1_SYS, WEB1_DATA]
    assert driver.snapshot_server(ctx, WEB1, "snap-1") == first  # same name: the same snapshot
    path = vf.volume_file(runtime.settings.volumes_dir, WEB1_SYS)

    # a write waits while the volumes are locked for a snapshot
    done = threading.Event()
    with vf.locked_volumes([path], exclusive=True):
        t = threading.Thread(target=lambda: (write(runtime, WEB1_SYS, 8 * MIB, b"b" * 100), done.set()))
        t.start()
        time.sleep(0.5)
        assert not done.is_set()
    t.join(10)
    assert done.is_set()
    write(runtime, WEB1_SYS, 3 * MIB, b"c" * 10)
    second = driver.snapshot_server(ctx, WEB1, "snap-2", since={WEB1_SYS: "snap-1", WEB1_DATA: "snap-1"})
    sys2 = second.volume(WEB1_SYS)
    assert driver.changed_ranges(sys2) == [(3 * MIB, 10), (8 * MIB, 100)]
    assert driver.changed_ranges(second.volume(WEB1_DATA)) == []
    reader = driver.open_snapshot(sys2)
    try:
        assert reader.read(0, 4) == b"aaaa" and reader.read(8 * MIB, 3) == b"bbb"
        assert reader.allocated_ranges()[0][0] == 0
        assert sum(n for _, n in reader.allocated_ranges()) < 64 * MIB  # holes stay holes
        # copy-on-write: later writes, and a restore writer, do not change what the snapshot reads
        write(runtime, WEB1_SYS, 8 * MIB - 2, b"X" * 10)
        writer = driver.open_volume_writer(ctx, WEB1_SYS)
        writer.write(0, b"z")
        writer.write_zeroes(MIB // 2, MIB)
        writer.flush()
        writer.close()
        assert reader.read(8 * MIB - 4, 8) == b"\0\0\0\0bbbb"
        assert reader.read(0, 4) == b"aaaa" and reader.read(MIB // 2, 4) == b"aaaa"
        assert reader.read(MIB, 4) == b"\0\0\0\0"
        assert len(reader.read(sys2.size - 3, 10)) == 3
    finally:
        reader.close()
    live = driver.open_snapshot(driver.snapshot_server(ctx, WEB1, "snap-live").volume(WEB1_SYS))
    assert live.read(0, 2) == b"za" and live.read(8 * MIB - 2, 3) == b"XXX"
    live.close()
    driver.delete_snapshot(driver.snapshot_server(ctx, WEB1, "snap-live"))
    # a restore writer invalidates the change log: the next incremental reads everything
    third = driver.snapshot_server(ctx, WEB1, "snap-3", since={WEB1_SYS: "snap-live"})
    assert driver.changed_ranges(third.volume(WEB1_SYS)) == []
    third = driver.snapshot_server(ctx, WEB1, "snap-4", since={WEB1_SYS: "snap-2"})
    assert driver.changed_ranges(third.volume(WEB1_SYS)) is None
    driver.delete_snapshot(first)
    driver.delete_snapshot(first)  # idempotent
    assert not (driver.snapshots_dir / "snap-1").exists()
    for snap in ("snap-2", "snap-3", "snap-4"):
        driver.delete_snapshot(driver.snapshot_server(ctx, WEB1, snap))
    assert not any(vf.cow_dir(runtime.settings.volumes_dir, WEB1_SYS).iterdir())  # no copy-on-write left
    assert driver.power_off(ctx, WEB1) is True and driver.power_off(ctx, WEB1) is False
    driver.power_on(ctx, WEB1)
    from opencsbs.core.errors import CSBSError

    with pytest.raises(CSBSError):
        driver.snapshot_server(CloudContext("other-project"), WEB1, "snap-x")
