"""Copies of backups to a second bank through the API, the engine and the CLI: the primary bank is a local folder,
the replica the suite's real S3 server. A backup copied (copy_status, sizes), an incremental's copy sending only
its new chunks, a worker killed mid-copy and the copy resumed, a policy rule copying by itself, a restore that
survives the loss of the primary's chunks, and no credentials in any answer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from bank_helpers import S3_ENDPOINT, s3_bank_settings
from engine_helpers import DB1, DB1_SYS, MIB, digest, item_of, protect, random_bytes, restore, run_jobs, write
from opencsbs.config import ReplicaSettings, Settings
from opencsbs.db.base import transaction
from opencsbs.db.models import Job
from opencsbs.engine.jobs import LeaseLost, claim_next


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    from conftest import require_component

    require_component(bool(S3_ENDPOINT), "no S3 server: run scripts/services/s3.sh start")
    s = Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0, scheduler=False,
                 replicas=[ReplicaSettings(name="dr", **s3_bank_settings().model_dump())])
    return s


def _copies(client, headers, item_id):
    r = client.get(f"/opencsbs/v1/demo/checkpoint_items/{item_id}/copies", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["copies"]


def _backup(client, headers, runtime) -> dict:
    cp = protect(client, headers, DB1).json()["checkpoint"]
    run_jobs(runtime)
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "available"
    return item


def test_a_backup_copied_on_demand_then_an_incremental_sends_only_new_chunks(demo, runtime):
    client, headers = demo
    write(runtime, DB1_SYS, 0, random_bytes(24 * MIB, 1))
    item = _backup(client, headers, runtime)
    assert item["extend_info"]["copy_status"] == "na"
    assert "replication_records" not in item  # without a copy: the keys a CSBS client always saw

    r = client.post(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies",
                    json={"copy": {"destination": "dr"}}, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["copy"]["status"] == "waiting"
    assert item_of(client, headers, item["checkpoint_id"])["extend_info"]["copy_status"] == "waiting_copy"
    run_jobs(runtime)
    [first] = _copies(client, headers, item["id"])
    assert first["status"] == "available" and first["destination"] == "dr"
    assert first["destination_location"] == "s3" and first["finished_at"]
    assert first["size"] == sum(vb["source_volume_size"] for vb in item["extend_info"]["volume_backups"]) * 1024 ** 3
    assert first["sent_bytes"] >= 24 * MIB  # incompressible data
    shown = item_of(client, headers, item["checkpoint_id"])
    assert shown["extend_info"]["copy_status"] == "success"  # the reference's values: na|waiting_copy|copying|success|fail
    [record] = shown["replication_records"]
    assert record["id"] == first["id"] and record["status"] == "success"
    assert record["destination_region"] == "dr" and record["destination_backup_id"] == item["id"]
    assert record["source_checkpoint_id"] == record["destination_checkpoint_id"] == item["checkpoint_id"]
    assert record["source_project_id"] == record["destination_project_id"] == "demo"
    assert record["created_at"] == first["created_at"] and record["finished_at"] == first["finished_at"]
    assert record["extra_info"] == {"auto_trigger": False, "size": first["size"], "sent_bytes": first["sent_bytes"],
                                    "fail_reason": "", "deleted_at": None}
    r = client.get("/v1/demo/checkpoint_items", headers=headers)
    listed = next(i for i in r.json()["checkpoint_items"] if i["id"] == item["id"])
    assert listed["replication_records"] == shown["replication_records"]
    # asking again returns the copy, no second job
    again = client.post(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies",
                        json={"copy": {"destination": "dr"}}, headers=headers).json()["copy"]
    assert again["id"] == first["id"]

    write(runtime, DB1_SYS, 4 * MIB + 10, b"changed")  # one 4 MiB chunk changes
    second = _backup(client, headers, runtime)
    client.post(f"/opencsbs/v1/demo/checkpoint_items/{second['id']}/copies",
                json={"copy": {"destination": "dr"}}, headers=headers)
    run_jobs(runtime)
    [copy2] = _copies(client, headers, second["id"])
    assert copy2["status"] == "available"
    assert 0 < copy2["sent_bytes"] <= 4 * MIB + 64  # only the changed chunk travelled

    # no credential, no endpoint in what a client sees
    secret = runtime.settings.replicas[0].s3_secret_key
    for text in (r.text, client.get(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies",
                                     headers=headers).text):
        assert secret not in text and S3_ENDPOINT not in text


def test_client_mistakes(demo, runtime):
    client, headers = demo
    item = _backup(client, headers, runtime)
    url = f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies"
    r = client.post(url, json={"copy": {"destination": "nowhere"}}, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001" and "nowhere" in r.json()["error_msg"]
    r = client.post(url, json={"copy": {}}, headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    r = client.post("/opencsbs/v1/demo/checkpoint_items/0d6b0d2c-0000-4000-8000-000000000000/copies",
                    json={"copy": {"destination": "dr"}}, headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"


def test_a_worker_killed_mid_copy_is_resumed(demo, runtime):
    client, headers = demo
    write(runtime, DB1_SYS, 0, random_bytes(96 * MIB, 2))  # 24 chunks
    item = _backup(client, headers, runtime)
    client.post(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies",
                json={"copy": {"destination": "dr"}}, headers=headers)
    from opencsbs.bank import open_bank
    from opencsbs.engine import copy

    replica = open_bank(runtime.settings, "dr")
    job = claim_next(runtime.sessions, "doomed", lease_seconds=30)
    assert job.kind == "copy"
    copy.STEPS[job.step](runtime, job)  # start
    assert job.step == "send"
    stop = threading.Event()

    def killer():  # the worker dies once a few chunks are on the replica
        while not stop.is_set():
            if sum(1 for _ in replica.store.list("chunks/")) >= 3:
                job.lost.set()
                return
            stop.wait(0.01)

    t = threading.Thread(target=killer)
    t.start()
    with pytest.raises(LeaseLost):
        copy.STEPS["send"](runtime, job)
    stop.set()
    t.join()
    sent_before = sum(1 for _ in replica.store.list("chunks/"))
    assert 3 <= sent_before < 24
    assert not replica.list_indexes()  # not a backup on the replica yet
    assert _copies(client, headers, item["id"])[0]["status"] == "copying"
    with transaction(runtime.sessions) as session:  # the dead worker's lease expires
        session.execute(update(Job).values(lease_until=None))
    run_jobs(runtime)
    [done] = _copies(client, headers, item["id"])
    assert done["status"] == "available"
    total = sum(1 for _ in replica.store.list("chunks/"))
    assert total == 24 and done["sent_bytes"] > 0
    # the resumed worker sent only what was missing: the job's count covers the chunks after the kill
    with runtime.sessions() as session:
        state = session.get(Job, job.id).state
    assert state["sent_chunks"] == total - sent_before
    replica.close()


def test_a_restore_survives_the_loss_of_the_primary_banks_chunks(demo, runtime):
    client, headers = demo
    write(runtime, DB1_SYS, 0, random_bytes(12 * MIB, 3))
    item = _backup(client, headers, runtime)
    before = digest(runtime, DB1_SYS)
    client.post(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies",
                json={"copy": {"destination": "dr"}}, headers=headers)
    run_jobs(runtime)
    bank = runtime.bank
    keys = [info.key for info in bank.store.list("chunks/")]
    assert keys
    for key in keys[::2]:
        bank.store.delete(key)  # lost
    for key in keys[1::2]:
        blob = bytearray(bank.store.get(key))
        blob[-1] ^= 0x55
        bank.store.put(key, bytes(blob))  # damaged
    write(runtime, DB1_SYS, 0, b"\0" * (12 * MIB))
    r = restore(client, headers, item, DB1)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    assert digest(runtime, DB1_SYS) == before
    assert runtime.bank.verify().ok  # repaired from the replica


def test_a_policy_rule_copies_its_backups(demo, runtime):
    client, headers = demo
    from opencsbs.service import replication

    from policy_helpers import PROVIDER, body, create

    write(runtime, DB1_SYS, 0, random_bytes(5 * MIB, 5))
    r = create(client, headers, body(name="nightly", resources=(DB1,)))
    assert r.status_code == 200, r.text
    policy_id = r.json()["policy"]["id"]
    rule = replication.add_rule(runtime, "demo", policy_id, "dr")
    r = client.post(f"/v1/demo/providers/{PROVIDER}/checkpoints", headers=headers,
                    json={"checkpoint": {"plan_id": policy_id, "parameters": {}}})
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    [rule_view] = replication.list_rules(runtime)
    assert rule_view["id"] == rule["id"] and rule_view["pending"] == 1
    from opencsbs.bootstrap import make_scheduler

    make_scheduler(runtime).tick()  # the policy's retention pass starts the copies its rule calls for
    assert replication.enqueue_due_copies(runtime) == 0  # already on its way
    run_jobs(runtime)
    [rule_view] = replication.list_rules(runtime)
    assert rule_view["pending"] == 0 and rule_view["last_success"] and rule_view["sent_bytes"] > 0


def test_a_replica_unreachable_then_back_and_no_credentials_in_errors_or_logs(demo, runtime, caplog):
    import logging

    client, headers = demo
    write(runtime, DB1_SYS, 0, random_bytes(6 * MIB, 6))
    item = _backup(client, headers, runtime)
    replica = runtime.settings.replicas[0]
    endpoint, secret = replica.s3_endpoint, replica.s3_secret_key
    caplog.set_level(logging.DEBUG)

    replica.s3_endpoint = "http://127.0.0.1:9"  # nothing listens: the site is unreachable
    client.post(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/copies",
                json={"copy": {"destination": "dr"}}, headers=headers)
    run_jobs(runtime)
    [copy] = _copies(client, headers, item["id"])
    assert copy["status"] == "copying"  # a transient failure: tried again later
    replica.s3_endpoint = endpoint  # back
    with transaction(runtime.sessions) as session:
        session.execute(update(Job).values(lease_until=None))
    run_jobs(runtime)
    [copy] = _copies(client, headers, item["id"])
    assert copy["status"] == "available"

    replica.s3_secret_key = secret + "-wrong"  # refused credentials: the copy fails, saying why, secretly
    second = _backup(client, headers, runtime)
    client.post(f"/opencsbs/v1/demo/checkpoint_items/{second['id']}/copies",
                json={"copy": {"destination": "dr"}}, headers=headers)
    run_jobs(runtime)
    [failed] = _copies(client, headers, second["id"])
    assert failed["status"] == "error" and "replica dr" in failed["error"]
    r = client.get(f"/v1/demo/checkpoint_items/{second['id']}", headers=headers)
    shown = r.json()["checkpoint_item"]
    assert shown["extend_info"]["copy_status"] == "fail"
    [record] = shown["replication_records"]
    assert record["status"] == "fail" and record["extra_info"]["fail_reason"] == failed["error"]
    assert secret not in r.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("opencsbs"))
    assert "copy to replica dr" in ours
    for text in (failed["error"], ours):
        assert secret not in text  # (the access key id here is a prefix of the bucket's name: not checked)
    assert secret not in caplog.text  # nor in any library's debug lines
    replica.s3_secret_key = secret
