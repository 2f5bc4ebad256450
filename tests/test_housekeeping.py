"""Housekeeping (engine/housekeeping.py): finished jobs past their retention are deleted, running/queued or still
referenced ones never; the sandbox's change-log generations no kept backup can need are dropped, and incremental
backups stay byte-exact afterwards."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from engine_helpers import DB1, DB1_SYS, MIB, PROVIDER, WEB1, digest, fill, item_of, protect, restore, run_jobs, \
    write, random_bytes
from opencsbs.bootstrap import make_scheduler
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import Job, ResourceLock, Restore, VolumeBackup
from opencsbs.engine.housekeeping import housekeep


def _age(runtime, job_id: str, days: float) -> None:
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(days=days)))


def _jobs(runtime) -> dict[str, str]:
    with runtime.sessions() as session:
        return {j.id: j.status for j in session.query(Job)}


def _backup(client, headers, runtime, server, run=True, **param) -> dict:
    r = protect(client, headers, server, **param)
    assert r.status_code == 200, r.text
    if run:
        run_jobs(runtime)
    return item_of(client, headers, r.json()["checkpoint"]["id"])


def test_finished_jobs_pruned_unless_recent_running_or_referenced(demo, runtime):
    client, headers = demo
    old = _backup(client, headers, runtime, WEB1)              # done, will be aged: pruned
    recent = _backup(client, headers, runtime, WEB1)           # done just now: kept
    locked = _backup(client, headers, runtime, DB1)            # done, aged, but a lock points at it: kept
    in_restore = _backup(client, headers, runtime, DB1)        # done, aged, an in-progress restore points at it
    queued = _backup(client, headers, runtime, "9cfaad9b-df7b-42e5-8bc8-adacbcbd0010", run=False,
                     resource_type="OS::Ironic::BareMetalServer")
    ids = {name: item["extend_info"]["taskid"] for name, item in
           (("old", old), ("recent", recent), ("locked", locked), ("in_restore", in_restore), ("queued", queued))}
    assert all(ids.values()) and len(set(ids.values())) == 5
    for name in ("old", "locked", "in_restore"):
        _age(runtime, ids[name], 8)
    with transaction(runtime.sessions) as session:
        session.add(ResourceLock(resource_id="some-server", project_id="demo", operation="backup",
                                 job_id=ids["locked"]))
        session.add(Restore(project_id="demo", provider_id=PROVIDER, checkpoint_id=in_restore["checkpoint_id"],
                            checkpoint_item_id=in_restore["id"], target_server_id=DB1, status="in_progress",
                            job_id=ids["in_restore"]))
    # an old failed job goes too; an old pending one (queued, never finished) stays
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).where(Job.id == ids["queued"]).values(created_at=utcnow() - timedelta(days=30)))

    runtime.settings.engine.job_retention_days = 0  # 0: keep for ever
    assert housekeep(runtime).jobs == 0
    runtime.settings.engine.job_retention_days = 7
    make_scheduler(runtime).tick()  # the scheduler's first pass runs housekeeping
    report = housekeep(runtime)
    jobs = _jobs(runtime)
    assert ids["old"] not in jobs
    assert {ids["recent"], ids["locked"], ids["in_restore"], ids["queued"]} <= set(jobs)
    assert jobs[ids["queued"]] == "pending"
    assert report.jobs == 0  # the scheduler's pass already removed it
    # the backup whose job went is untouched, and still shows its task id
    shown = item_of(client, headers, old["checkpoint_id"])
    assert shown["status"] == "available" and shown["extend_info"]["taskid"] == ids["old"]
    # a failed job ages out like a done one
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).where(Job.id == ids["recent"]).values(status="failed"))
    _age(runtime, ids["recent"], 7.5)
    assert housekeep(runtime).jobs == 1 and ids["recent"] not in _jobs(runtime)


def _chain(runtime, volume_id: str) -> tuple[list[str], list[str]]:
    cdir = runtime.settings.volumes_dir / "changes" / volume_id
    chain = (cdir / "chain").read_text().split() if (cdir / "chain").exists() else []
    logs = sorted(p.name[:-4] for p in cdir.glob("*.log")) if cdir.exists() else []
    return chain, logs


def _read_bytes(runtime, item) -> int:
    with runtime.sessions() as session:
        return sum(vb.read_bytes for vb in session.query(VolumeBackup).filter_by(checkpoint_item_id=item["id"]))


def _delete(client, headers, runtime, item) -> None:
    r = client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}", headers=headers)
    assert r.status_code == 200, r.text
    run_jobs(runtime)


def test_sandbox_change_logs_no_backup_needs_are_dropped(demo, runtime):
    client, headers = demo
    fill(runtime, DB1_SYS, 1)
    items = []
    for i in range(3):
        items.append(_backup(client, headers, runtime, DB1))
        write(runtime, DB1_SYS, (10 + i) * MIB, random_bytes(MIB, 50 + i))
    names = [f"csbs-{item['extend_info']['taskid']}" for item in items]
    assert _chain(runtime, DB1_SYS) == (names, sorted(names))
    # every backup is a possible base: only the oldest generation's log (writes before backup 1) goes
    assert housekeep(runtime).change_logs == 1
    assert _chain(runtime, DB1_SYS) == (names, sorted(names[1:]))
    # backups 1 and 2 deleted: only backup 3 can be a base
    _delete(client, headers, runtime, items[0])
    _delete(client, headers, runtime, items[1])
    assert housekeep(runtime).change_logs == 2
    assert _chain(runtime, DB1_SYS) == (names[2:], [])
    # the next backup is still incremental from backup 3, reads only what changed, and restores byte-exact
    fourth = _backup(client, headers, runtime, DB1)
    assert fourth["extend_info"]["incremental"] is True
    assert _read_bytes(runtime, fourth) <= 4 * MIB  # the 1 MiB written after backup 3 (one chunk)
    expected = digest(runtime, DB1_SYS)
    write(runtime, DB1_SYS, 0, random_bytes(2 * MIB, 77))
    assert restore(client, headers, fourth, DB1).status_code == 200
    run_jobs(runtime)
    assert digest(runtime, DB1_SYS) == expected
    # no backup left at all: the chain, its logs and the pending log go
    _delete(client, headers, runtime, items[2])
    _delete(client, headers, runtime, fourth)
    housekeep(runtime)
    assert _chain(runtime, DB1_SYS) == ([], [])
    assert not (runtime.settings.volumes_dir / f"{DB1_SYS}.changes").exists()
    fifth = _backup(client, headers, runtime, DB1)
    assert fifth["status"] == "available" and fifth["extend_info"]["incremental"] is False


def _chunks(runtime) -> int:
    return sum(1 for _ in runtime.bank.store.list("chunks/"))


def test_housekeeping_gives_the_space_of_deleted_backups_back(demo, runtime, caplog):
    """No operator: a deleted backup's chunks are freed by housekeeping's garbage collection once the grace
    period has passed, which is logged; the next pass within ``gc_interval_seconds`` does not collect again."""
    import logging
    import time

    client, headers = demo
    fill(runtime, DB1_SYS, 3)
    kept = _backup(client, headers, runtime, WEB1)
    gone = _backup(client, headers, runtime, DB1)
    before = _chunks(runtime)
    engine = runtime.settings.engine
    engine.gc_grace_seconds = 3600.0
    _delete(client, headers, runtime, gone)
    with caplog.at_level(logging.INFO, logger="opencsbs.engine"):
        first = housekeep(runtime).gc
    assert first is not None and first.deleted_chunks == 0  # all within the grace period
    assert first.reclaimable_bytes > 0 and _chunks(runtime) == before
    assert "bank gc: 0 chunks (0 bytes) freed" in caplog.text and "grace period of 3600 s" in caplog.text
    assert housekeep(runtime).gc is None  # not due again before gc_interval_seconds
    engine.gc_grace_seconds = 0.0
    engine.gc_interval_seconds = 0.01
    time.sleep(0.05)
    report = housekeep(runtime).gc
    assert report.deleted_chunks > 0 and report.freed_bytes >= first.reclaimable_bytes > 0
    assert _chunks(runtime) == before - report.deleted_chunks
    # the kept backup still restores (the bank checks every chunk and the volume hash)
    from opencsbs.db.models import Restore as RestoreRow

    assert restore(client, headers, kept, WEB1).status_code == 200
    run_jobs(runtime)
    with runtime.sessions() as session:
        assert [r.status for r in session.query(RestoreRow)] == ["success"]


def test_housekeeping_gc_can_be_turned_off(demo, runtime):
    runtime.settings.engine.gc_interval_seconds = 0
    assert housekeep(runtime).gc is None
