"""Retention locks and legal holds through the API, the engine, retention and the bank's GC (docs/locks.md).

Each test fails without the guarantee it names: a compliance lock refuses the CSBS delete to the project, its
admin and a cloud admin; a governance lock is lifted only by a cloud admin, and that is audited; a legal hold
refuses the delete until released; retention skips kept backups and its run says so; GC keeps a locked backup.
"""

from __future__ import annotations

import pytest

from engine_helpers import DB1, DB1_SYS, MIB, PROVIDER, item_of, protect, random_bytes, run_jobs, write
from policy_helpers import body, create

LOCKS = "/opencsbs/v1/demo/locks"
HOLDS = "/opencsbs/v1/demo/holds"


def _backup(client, headers, **param) -> dict:
    r = protect(client, headers, DB1, **param)
    assert r.status_code == 200, r.text
    run_jobs(client.app.state.runtime)
    return item_of(client, headers, r.json()["checkpoint"]["id"])


def _delete(client, headers, item):
    return client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}", headers=headers)


def _status(client, headers, item) -> str:
    r = client.get(f"/v1/demo/checkpoint_items/{item['id']}", headers=headers)
    return r.json()["checkpoint_item"]["status"] if r.status_code == 200 else str(r.status_code)


@pytest.fixture
def tokens(demo, make_token):
    client, member = demo
    return client, member, {"X-Auth-Token": make_token("demo", "admin")}, \
        {"X-Auth-Token": make_token(None, "cloud-admin")}


def _lock(client, headers, **lock):
    r = client.post(LOCKS, json={"lock": lock}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["lock"]


def test_compliance_lock_refuses_every_delete_and_every_weakening(tokens, runtime):
    client, member, admin, cloud = tokens
    item = _backup(client, member)
    wire_before = client.get(f"/v1/demo/checkpoint_items/{item['id']}", headers=member).json()
    # a member cannot set a lock (csbs:locks:write is admin by default)
    r = client.post(LOCKS, json={"lock": {"mode": "compliance", "min_retention_days": 30}}, headers=member)
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0302"
    lock = _lock(client, admin, mode="compliance", min_retention_days=30, cooling_off_hours=0)
    assert lock["immutable"] is True and lock["cooling_off_until"] == lock["created_at"]
    for who in (member, admin, cloud):
        r = _delete(client, who, item)
        assert r.status_code == 409, r.text
        body_ = r.json()
        assert body_["error_code"] == "CSBS.8101"
        assert body_["error_msg"].startswith(f"Backup ({item['id']}) is under compliance retention lock "
                                             f"({lock['id']}) until ")
        r = client.delete(f"/v1/demo/providers/{PROVIDER}/checkpoints/{item['checkpoint_id']}",
                          params={"checkpoint_items": item["id"]}, headers=who)
        assert r.status_code == 409 and r.json()["error_code"] == "CSBS.8101"
    run_jobs(runtime)
    assert _status(client, member, item) == "available"
    # CSBS clients see unchanged wire bodies
    assert client.get(f"/v1/demo/checkpoint_items/{item['id']}", headers=member).json() == wire_before
    # nobody removes or weakens it after the cooling-off period, not even a cloud admin
    for who in (admin, cloud):
        r = client.delete(f"{LOCKS}/{lock['id']}", headers=who)
        assert r.status_code == 409 and r.json()["error_code"] == "CSBS.8103", r.text
        for change in ({"min_retention_days": 1}, {"mode": "governance"}):
            r = client.put(f"{LOCKS}/{lock['id']}", json={"lock": change}, headers=who)
            assert r.status_code == 409 and r.json()["error_code"] == "CSBS.8103", r.text
    # strengthening is allowed
    r = client.put(f"{LOCKS}/{lock['id']}", json={"lock": {"min_retention_days": 60}}, headers=admin)
    assert r.status_code == 200 and r.json()["lock"]["min_retention_days"] == 60
    v = client.get(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/retention", headers=member).json()["retention"]
    assert v["deletable"] is False and v["reason"] == "retention_lock" and v["lock_id"] == lock["id"]
    assert client.get(LOCKS, headers=member).json()["locks"][0]["min_retention_days"] == 60


def test_compliance_lock_can_be_removed_during_cooling_off(tokens):
    client, member, admin, _cloud = tokens
    item = _backup(client, member)
    lock = _lock(client, admin, mode="compliance", min_retention_days=30)
    assert lock["cooling_off_hours"] == 72 and lock["immutable"] is False
    assert _delete(client, member, item).status_code == 409
    assert client.delete(f"{LOCKS}/{lock['id']}", headers=admin).status_code == 200
    assert client.get(f"{LOCKS}/{lock['id']}", headers=admin).json()["error_code"] == "CSBS.8105"
    assert _delete(client, member, item).status_code == 200
    actions = [(r["action"], r["bypass"]) for r in
               client.get("/opencsbs/v1/demo/lock_audit", headers=member).json()["records"]]
    assert actions == [("lock.create", False), ("lock.remove", False)]


def test_governance_lock_is_lifted_only_by_a_cloud_admin_and_audited(tokens, runtime):
    client, member, admin, cloud = tokens
    item = _backup(client, member)
    lock = _lock(client, admin, mode="governance", min_retention_days=10)
    for who in (member, admin, cloud):
        r = _delete(client, who, item)
        assert r.status_code == 409 and r.json()["error_code"] == "CSBS.8101", r.text
        assert "governance retention lock" in r.json()["error_msg"]
    # the project's own admin lacks csbs:locks:bypass_governance
    r = client.put(f"{LOCKS}/{lock['id']}", json={"lock": {"min_retention_days": 1}}, headers=admin)
    assert r.status_code == 403 and r.json()["error_code"] == "CSBS.8104", r.text
    assert client.delete(f"{LOCKS}/{lock['id']}", headers=admin).json()["error_code"] == "CSBS.8104"
    # the cloud admin shortens, then lifts it: both audited as bypasses, naming the actor
    r = client.put(f"{LOCKS}/{lock['id']}", json={"lock": {"min_retention_days": 5}}, headers=cloud)
    assert r.status_code == 200, r.text
    assert client.delete(f"{LOCKS}/{lock['id']}", headers=cloud).status_code == 200
    records = client.get("/opencsbs/v1/demo/lock_audit", headers=member).json()["records"]
    assert [(r["action"], r["bypass"]) for r in records] == [
        ("lock.create", False), ("lock.update", True), ("lock.remove", True)]
    assert records[1]["detail"]["before"]["min_retention_days"] == 10
    assert records[1]["detail"]["after"]["min_retention_days"] == 5
    assert records[2]["actor_project"] == "" and records[2]["actor"]  # a system-scoped token, named
    page = client.get("/opencsbs/v1/demo/lock_audit", params={"marker": records[0]["id"], "limit": 1},
                      headers=member).json()["records"]
    assert [r["id"] for r in page] == [records[1]["id"]]
    assert _delete(client, member, item).status_code == 200
    run_jobs(runtime)
    assert _status(client, member, item) == "404"


def test_legal_hold_refuses_delete_until_released(tokens, runtime):
    client, member, admin, cloud = tokens
    item = _backup(client, member, tags=[{"key": "case", "value": "c-42"}])
    other = _backup(client, member)
    r = client.post(HOLDS, json={"hold": {"name": "case 42", "tag": {"key": "case", "value": "c-42"}}},
                    headers=member)
    assert r.status_code == 403  # holds are the admin's
    r = client.post(HOLDS, json={"hold": {"name": "case 42", "reason": "subpoena",
                                          "tag": {"key": "case", "value": "c-42"}}}, headers=admin)
    assert r.status_code == 200, r.text
    hold = r.json()["hold"]
    assert hold["status"] == "active" and hold["tag"] == {"key": "case", "value": "c-42"}
    for who in (member, admin, cloud):
        r = _delete(client, who, item)
        assert r.status_code == 409 and r.json()["error_code"] == "CSBS.8102", r.text
        assert hold["id"] in r.json()["error_msg"]
    v = client.get(f"/opencsbs/v1/demo/checkpoint_items/{item['id']}/retention", headers=member).json()["retention"]
    assert (v["deletable"], v["reason"], v["holds"]) == (False, "legal_hold", [hold["id"]])
    v = client.get(f"/opencsbs/v1/demo/checkpoint_items/{other['id']}/retention", headers=member).json()["retention"]
    assert v["deletable"] is True and v["reason"] is None
    run_jobs(runtime)
    assert _status(client, member, item) == "available"
    assert client.post(f"{HOLDS}/{hold['id']}/release", headers=member).status_code == 403
    r = client.post(f"{HOLDS}/{hold['id']}/release", headers=admin)
    assert r.status_code == 200 and r.json()["hold"]["status"] == "released"
    r = client.post(f"{HOLDS}/{hold['id']}/release", headers=admin)
    assert r.status_code == 409 and r.json()["error_code"] == "CSBS.8107"
    assert [h["id"] for h in client.get(HOLDS, params={"status": "released"}, headers=member).json()["holds"]] \
        == [hold["id"]]
    assert client.get(HOLDS, params={"status": "active"}, headers=member).json()["holds"] == []
    assert _delete(client, member, item).status_code == 200


def test_hold_beats_a_lock_that_expired_and_a_hold_by_id(tokens):
    client, member, admin, _cloud = tokens
    item = _backup(client, member)
    r = client.post(HOLDS, json={"hold": {"name": "by id", "checkpoint_item_ids": [item["id"]]}}, headers=admin)
    assert r.status_code == 200, r.text
    assert _delete(client, member, item).json()["error_code"] == "CSBS.8102"


@pytest.mark.parametrize("hold, status, code", [
    ({"name": "nothing"}, 400, "CSBS.9001"),
    ({"name": "x", "checkpoint_item_ids": ["nope"]}, 404, "CSBS.3001"),
    ({"name": "x", "policy_id": "nope"}, 404, "CSBS.3000"),
    ({"name": "x", "created_after": "yesterday"}, 400, "CSBS.9001"),
    ({"name": "x", "created_after": "2026-02-01T00:00:00", "created_before": "2026-01-01T00:00:00"}, 400,
     "CSBS.9001"),
    ({"name": "x", "tag": {"key": "bad key!"}}, 400, "CSBS.9001"),
])
def test_hold_refusals(tokens, hold, status, code):
    client, _member, admin, _cloud = tokens
    r = client.post(HOLDS, json={"hold": hold}, headers=admin)
    assert (r.status_code, r.json()["error_code"]) == (status, code), r.text


@pytest.mark.parametrize("lock, status, code", [
    ({"mode": "forever", "min_retention_days": 1}, 400, "CSBS.9001"),
    ({"mode": "compliance", "min_retention_days": 0}, 400, "CSBS.9001"),
    ({"mode": "compliance", "min_retention_days": 10, "max_retention_days": 5}, 400, "CSBS.9001"),
    ({"mode": "governance", "min_retention_days": 1, "policy_id": "nope"}, 404, "CSBS.3000"),
])
def test_lock_refusals(tokens, lock, status, code):
    client, _member, admin, _cloud = tokens
    r = client.post(LOCKS, json={"lock": lock}, headers=admin)
    assert (r.status_code, r.json()["error_code"]) == (status, code), r.text


def test_retention_skips_locked_backups_and_the_run_says_so(tokens, runtime):
    from sqlalchemy import select

    from opencsbs.db.base import transaction
    from opencsbs.db.models import CheckpointItem, PolicyRun
    from opencsbs.service.policy_runs import apply_retention

    client, member, admin, _cloud = tokens
    pid = create(client, member, body("keep1", resources=(DB1,), max_backups=1)).json()["policy"]["id"]
    for _ in range(3):
        r = client.post(f"/v1/demo/providers/{PROVIDER}/checkpoints",
                        json={"checkpoint": {"plan_id": pid, "parameters": {"auto_trigger": True}}}, headers=member)
        assert r.status_code == 200, r.text
        run_jobs(runtime)
    lock = _lock(client, admin, mode="compliance", min_retention_days=7, policy_id=pid, cooling_off_hours=0)
    with transaction(runtime.sessions) as session:
        run = PolicyRun(policy_id=pid, project_id="demo", auto_trigger=True, status="done", message="")
        session.add(run)
        session.flush()
        run_id = run.id
    assert apply_retention(runtime, pid, run_id=run_id) == []
    run_jobs(runtime)
    with runtime.sessions() as session:
        items = session.scalars(select(CheckpointItem).where(CheckpointItem.policy_id == pid)
                                .order_by(CheckpointItem.created_at)).all()
        assert [i.status for i in items] == ["available"] * 3
        message = session.get(PolicyRun, run_id).message
    assert message.startswith("retention kept 2 backup(s) under lock or hold: ")
    assert all(f"{i.id} (CSBS.8101)" in message for i in items[:2])
    assert lock["immutable"] is True
    # the backups stay kept whatever "now" the run is given: a delete is judged at the real time
    from datetime import timedelta

    from opencsbs.core.timeutil import utcnow

    assert apply_retention(runtime, pid, utcnow() + timedelta(days=8)) == []


def test_gc_keeps_the_chunks_of_a_locked_backup(tokens, runtime):
    client, member, admin, _cloud = tokens
    write(runtime, DB1_SYS, 0, random_bytes(4 * MIB, 77))
    item = _backup(client, member)
    name = f"checkpoints/{item['checkpoint_id']}/{item['extend_info']['volume_backups'][0]['id']}"
    _lock(client, admin, mode="compliance", min_retention_days=1, cooling_off_hours=0)
    assert _delete(client, member, item).status_code == 409
    run_jobs(runtime)
    report = runtime.bank.gc(grace_seconds=0)
    assert report.skipped_reason is None and report.referenced_chunks > 0
    idx = runtime.bank.read_index(name)  # the index is still there, and every chunk it names
    assert idx.addresses() and runtime.bank.verify().ok
    assert _status(client, member, item) == "available"


def test_locks_and_holds_of_another_project_are_invisible(tokens, make_token):
    client, member, admin, _cloud = tokens
    lock = _lock(client, admin, mode="governance", min_retention_days=3)
    intruder = {"X-Auth-Token": make_token("intruder", "admin")}
    assert client.get("/opencsbs/v1/intruder/locks", headers=intruder).json() == {"locks": []}
    r = client.get(f"/opencsbs/v1/intruder/locks/{lock['id']}", headers=intruder)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.8105"
    assert client.delete(f"/opencsbs/v1/intruder/locks/{lock['id']}", headers=intruder).status_code == 404
    assert client.get(f"{LOCKS}/{lock['id']}", headers=intruder).status_code == 403
    assert client.get("/opencsbs/v1/intruder/lock_audit", headers=intruder).json() == {"records": []}


@pytest.mark.parametrize("keeper", ["lock", "hold"])
def test_a_lock_or_hold_set_after_the_delete_was_accepted_still_stops_it(tokens, runtime, keeper):
    """The delete job checks again before it removes anything: the backup stays whole and returns to
    ``available``, the refusal in its extend_info; without the re-check the index would be gone."""
    client, member, admin, _cloud = tokens
    write(runtime, DB1_SYS, 0, random_bytes(2 * MIB, 78))
    item = _backup(client, member)
    other = _backup(client, member)  # deleted in the same way while nothing keeps it
    name = f"checkpoints/{item['checkpoint_id']}/{item['extend_info']['volume_backups'][0]['id']}"
    assert _delete(client, member, item).status_code == 200  # accepted: the job waits for a worker
    assert _delete(client, member, other).status_code == 200
    assert _status(client, member, item) == "deleting"
    if keeper == "lock":
        kept = _lock(client, admin, mode="governance", min_retention_days=7)
        code = "CSBS.8101"
    else:
        r = client.post(HOLDS, json={"hold": {"name": "late", "checkpoint_item_ids": [item["id"]]}}, headers=admin)
        assert r.status_code == 200, r.text
        kept = r.json()["hold"]
        code = "CSBS.8102"
    run_jobs(runtime)
    wire = client.get(f"/v1/demo/checkpoint_items/{item['id']}", headers=member).json()["checkpoint_item"]
    assert wire["status"] == "available"
    assert wire["extend_info"]["fail_op"] == "delete"
    assert wire["extend_info"]["fail_code"]["Code"] == int(code.split(".")[1])
    assert kept["id"] in wire["extend_info"]["fail_reason"]
    assert runtime.bank.read_index(name).addresses()  # nothing was removed
    # the lock covers the other backup too (a project lock): it stays; a hold by id lets it go
    assert _status(client, member, other) == ("available" if keeper == "lock" else "404")


def test_an_unknown_lock_audit_marker_is_refused_as_on_every_list(tokens, make_token):
    """``lock_audit?marker=`` must name a record of the URL's project: an unknown id, or another project's record,
    is 400 CSBS.9001 (as ``checkpoint_items?marker=nope``), never an empty page a client would take for the end."""
    client, member, admin, _cloud = tokens
    _lock(client, admin, mode="governance", min_retention_days=3)
    _lock(client, admin, mode="governance", min_retention_days=4)
    intruder = {"X-Auth-Token": make_token("intruder", "admin")}
    r = client.post("/opencsbs/v1/intruder/locks", json={"lock": {"mode": "governance", "min_retention_days": 3}},
                    headers=intruder)
    assert r.status_code == 200, r.text
    foreign = client.get("/opencsbs/v1/intruder/lock_audit", headers=intruder).json()["records"][0]["id"]
    own = client.get("/opencsbs/v1/demo/lock_audit", headers=member).json()["records"]
    assert len(own) == 2 and foreign not in {r["id"] for r in own}
    for marker in (99999, 0, foreign):
        r = client.get("/opencsbs/v1/demo/lock_audit", params={"marker": marker}, headers=member)
        assert r.status_code == 400, (marker, r.text)
        assert r.json() == {"error_code": "CSBS.9001",
                            "error_msg": f"Invalid request parameters: marker {marker} not found"}
    r = client.get("/opencsbs/v1/demo/lock_audit", params={"marker": "nope"}, headers=member)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", r.text
    # a known marker still pages, the last record's giving the empty last page
    r = client.get("/opencsbs/v1/demo/lock_audit", params={"marker": own[0]["id"]}, headers=member)
    assert [x["id"] for x in r.json()["records"]] == [own[1]["id"]]
    r = client.get("/opencsbs/v1/demo/lock_audit", params={"marker": own[1]["id"]}, headers=member)
    assert r.status_code == 200 and r.json() == {"records": []}
