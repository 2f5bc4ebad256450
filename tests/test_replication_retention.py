"""Copies on a replica kept by their replication rule's own retention, never removed while a retention lock or a
legal hold keeps them on that bank, and the rules' lag (CLI, extension route, metrics). The primary bank is a
local folder, the replica the suite's real S3 server."""

from __future__ import annotations

import time

from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bank_helpers import S3_ENDPOINT, s3_bank_settings
from engine_helpers import DB1, DB1_SYS, MIB, random_bytes, run_jobs, write
from opencsbs.config import ReplicaSettings, Settings
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem
from policy_helpers import PROVIDER, body, create


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    from conftest import require_component

    require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start")
    return Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0, scheduler=False,
                    replicas=[ReplicaSettings(name="dr", **s3_bank_settings().model_dump())])


def _policy(client, headers) -> str:
    r = create(client, headers, body(name="nightly", resources=(DB1,), max_backups=20))
    assert r.status_code == 200, r.text
    return r.json()["policy"]["id"]


def _automatic_backups(client, headers, runtime, policy_id: str, n: int) -> list[str]:
    """``n`` automatic backups of the policy (as the scheduler makes them), oldest first."""
    ids = []
    for i in range(n):
        # over half of its 4 MiB region: stored whole (docs/bank.md "Pieces"), so each copy has a chunk of its own
        write(runtime, DB1_SYS, 0, random_bytes(3 * MIB, 40 + i))
        r = client.post(f"/v1/demo/providers/{PROVIDER}/checkpoints", headers=headers,
                        json={"checkpoint": {"plan_id": policy_id, "parameters": {"auto_trigger": True}}})
        assert r.status_code == 200, r.text
        run_jobs(runtime)
        r = client.get("/v1/demo/checkpoint_items", params={"checkpoint_id": r.json()["checkpoint"]["id"]},
                       headers=headers)
        [item] = r.json()["checkpoint_items"]
        assert item["status"] == "available" and item["extend_info"]["auto_trigger"] is True
        ids.append(item["id"])
    return ids


def _copies(client, headers, item_id):
    r = client.get(f"/opencsbs/v1/demo/checkpoint_items/{item_id}/copies", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["copies"]


def _replica_state(runtime, item_id):
    """(index names, catalog record present) of ``item_id`` on the replica."""
    from opencsbs.bank import open_bank
    from opencsbs.bank.catalog import read_record

    replica = open_bank(runtime.settings, "dr")
    try:
        with runtime.sessions() as session:
            item = session.get(CheckpointItem, item_id)
            names = {vb.index_name for vb in item.volume_backups}
        present = set(replica.list_indexes()) & names
        return present, read_record(replica, item_id) is not None
    finally:
        replica.close()


def test_a_rules_own_max_backups_removes_older_copies_from_the_replica_only(demo, runtime):
    from opencsbs.bootstrap import make_scheduler
    from opencsbs.service import replication

    client, headers = demo
    policy_id = _policy(client, headers)
    rule = replication.add_rule(runtime, "demo", policy_id, "dr", max_backups=1)
    assert rule["max_backups"] == 1 and rule["retention_duration_days"] is None
    old, middle, new = _automatic_backups(client, headers, runtime, policy_id, 3)
    assert replication.enqueue_due_copies(runtime) == 3
    run_jobs(runtime)
    assert all(_copies(client, headers, i)[0]["status"] == "available" for i in (old, middle, new))
    assert _replica_state(runtime, old)[1]

    make_scheduler(runtime).tick()  # the policy's retention pass applies the rule's retention to its copies
    for gone in (old, middle):
        [copy] = _copies(client, headers, gone)
        assert copy["status"] == "deleted" and copy["deleted_at"]
        assert _replica_state(runtime, gone) == (set(), False)  # indexes and catalog record off the replica
        r = client.get(f"/v1/demo/checkpoint_items/{gone}", headers=headers)
        shown = r.json()["checkpoint_item"]
        assert shown["status"] == "available"  # the primary's backup is not touched
        assert shown["extend_info"]["copy_status"] == "na"
        [record] = shown["replication_records"]
        assert record["status"] == "deleted" and record["extra_info"]["deleted_at"] == copy["deleted_at"]
        assert record["extra_info"]["auto_trigger"] is True
    kept, record = _replica_state(runtime, new)
    assert kept and record
    assert _copies(client, headers, new)[0]["status"] == "available"
    # housekeeping sweeps the replica too: the removed copies' own chunks go, the kept copy stays whole
    from opencsbs.engine.housekeeping import housekeep

    runtime.settings.engine.gc_interval_seconds, runtime.settings.engine.gc_grace_seconds = 0.001, 0
    # the GC sweeps chunks written before its start as the bank's clock tells it, in whole seconds: let one pass
    time.sleep(1.1)
    swept = housekeep(runtime).replica_gc["dr"]
    assert swept.deleted_chunks >= 2 and not swept.skipped_reason
    from opencsbs.bank import open_bank

    replica = open_bank(runtime.settings, "dr")
    try:
        assert all(replica.check_volume(name) for name in _replica_state(runtime, new)[0])
    finally:
        replica.close()

    # a removed copy is not made again; the lag shows what the replica holds
    assert replication.enqueue_due_copies(runtime) == 0
    [lag] = replication.list_rules(runtime, "demo")
    assert (lag["pending"], lag["copying"], lag["failed"], lag["copies"], lag["removed"]) == (0, 0, 0, 1, 2)
    assert lag["last_success"] and lag["oldest_pending_since"] is None and lag["sent_bytes"] >= 6 * MIB


def test_a_lock_keeps_a_copy_on_the_replica_counted_from_its_arrival(demo, runtime, make_token):
    from opencsbs.service import locks, replication
    from opencsbs.service.replica_retention import apply_replica_retention

    client, headers = demo
    admin = {"X-Auth-Token": make_token("demo", "admin")}
    policy_id = _policy(client, headers)
    replication.add_rule(runtime, "demo", policy_id, "dr", retention_duration_days=1)
    [item_id] = _automatic_backups(client, headers, runtime, policy_id, 1)
    replication.enqueue_due_copies(runtime)
    run_jobs(runtime)
    r = client.post("/opencsbs/v1/demo/locks", headers=admin,
                    json={"lock": {"mode": "governance", "min_retention_days": 2}})
    assert r.status_code == 200, r.text
    # the backup on the primary is ten days old: there, the lock no longer keeps it
    with transaction(runtime.sessions) as session:
        session.execute(update(CheckpointItem).where(CheckpointItem.id == item_id)
                        .values(created_at=utcnow() - timedelta(days=10)))
    assert locks.backup_retention(runtime, "demo", item_id)["deletable"] is True
    # on the replica the copy arrived just now: a day and a half later the rule would remove it, the lock keeps it
    report = apply_replica_retention(runtime, policy_id, utcnow() + timedelta(days=1, hours=12))
    [copy] = _copies(client, headers, item_id)
    assert report.kept == {copy["id"]: "CSBS.8101"} and not report.removed
    assert copy["status"] == "available" and _replica_state(runtime, item_id)[0]

    # a legal hold keeps it past the lock, until released
    r = client.post("/opencsbs/v1/demo/holds", headers=admin,
                    json={"hold": {"name": "case-7", "reason": "audit", "checkpoint_item_ids": [item_id]}})
    assert r.status_code == 200, r.text
    hold_id = r.json()["hold"]["id"]
    report = apply_replica_retention(runtime, policy_id, utcnow() + timedelta(days=3))
    assert report.kept == {copy["id"]: "CSBS.8102"} and _copies(client, headers, item_id)[0]["status"] == "available"
    r = client.post(f"/opencsbs/v1/demo/holds/{hold_id}/release", headers=admin)
    assert r.status_code == 200, r.text
    report = apply_replica_retention(runtime, policy_id, utcnow() + timedelta(days=3))
    assert report.removed == [copy["id"]] and not report.kept
    assert _copies(client, headers, item_id)[0]["status"] == "deleted"
    assert _replica_state(runtime, item_id) == (set(), False)


def test_a_removal_cut_short_is_finished_by_the_next_pass(demo, runtime):
    from opencsbs.service import replication
    from opencsbs.service.replica_retention import apply_replica_retention

    client, headers = demo
    policy_id = _policy(client, headers)
    replication.add_rule(runtime, "demo", policy_id, "dr", max_backups=1)
    old, _new = _automatic_backups(client, headers, runtime, policy_id, 2)
    replication.enqueue_due_copies(runtime)
    run_jobs(runtime)
    replica = runtime.settings.replicas[0]
    endpoint = replica.s3_endpoint
    replica.s3_endpoint = "http://127.0.0.1:9"  # the replica cannot be reached during the pass
    try:
        report = apply_replica_retention(runtime, policy_id)
    finally:
        replica.s3_endpoint = endpoint
    [copy] = _copies(client, headers, old)
    assert copy["status"] == "deleting" and list(report.failed) == [copy["id"]]
    assert "replica dr" in report.failed[copy["id"]] and replica.s3_secret_key not in report.failed[copy["id"]]
    assert _replica_state(runtime, old)[1]  # still there
    report = apply_replica_retention(runtime, policy_id)
    assert report.removed == [copy["id"]]
    assert _copies(client, headers, old)[0]["status"] == "deleted" and _replica_state(runtime, old) == (set(), False)


def test_rule_lag_on_the_extension_route_and_in_the_metrics(demo, runtime):
    from opencsbs.service import replication

    client, headers = demo
    policy_id = _policy(client, headers)
    rule = replication.add_rule(runtime, "demo", policy_id, "dr")
    r = client.get("/opencsbs/v1/demo/replication/rules", headers=headers)
    assert r.status_code == 200, r.text
    [lag] = r.json()["rules"]
    assert lag["id"] == rule["id"] and lag["pending"] == 0 and lag["last_success"] is None

    first, second = _automatic_backups(client, headers, runtime, policy_id, 2)
    [lag] = client.get("/opencsbs/v1/demo/replication/rules", headers=headers).json()["rules"]
    assert lag["pending"] == 2 and lag["copying"] == 0 and lag["oldest_pending_since"]
    with runtime.sessions() as session:
        oldest = session.get(CheckpointItem, first).created_at
    text = client.get("/metrics").text
    labels = f'{{policy_id="{policy_id}",project_id="demo",replica="dr"}}'
    assert f"opencsbs_replication_pending_backups{labels} 2.0" in text
    assert f"opencsbs_replication_last_success_timestamp_seconds{labels} 0.0" in text
    stamp = float(next(line.split()[-1] for line in text.splitlines()
                       if line.startswith("opencsbs_replication_oldest_pending_timestamp_seconds{")))
    assert abs(stamp - oldest.replace(tzinfo=UTC).timestamp()) < 0.01  # the first backup waits for its copy
    replication.enqueue_due_copies(runtime)
    [lag] = client.get("/opencsbs/v1/demo/replication/rules", headers=headers).json()["rules"]
    assert lag["pending"] == 0 and lag["copying"] == 2
    run_jobs(runtime)
    [lag] = client.get("/opencsbs/v1/demo/replication/rules", headers=headers).json()["rules"]
    assert (lag["pending"], lag["copying"], lag["copies"]) == (0, 0, 2) and lag["last_success"]
    text = client.get("/metrics").text
    assert f"opencsbs_replication_pending_backups{labels} 0.0" in text
    sent = next(line for line in text.splitlines() if line.startswith(f"opencsbs_replication_sent_bytes_total{labels}"))
    assert float(sent.split()[-1]) == lag["sent_bytes"] > 0
    assert 'opencsbs_jobs{kind="copy",status="done"} 2.0' in text
    # another project sees no rule of demo's
    other = client.get("/opencsbs/v1/other/replication/rules", headers=headers)
    assert other.status_code in (401, 403) or other.json()["rules"] == []
