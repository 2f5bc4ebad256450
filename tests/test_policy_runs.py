"""Executing a policy (POST .../checkpoints) through the real engine, and retention of automatic backups."""

from __future__ import annotations

from datetime import timedelta

from opencsbs.core.timeutil import utcnow

from engine_helpers import protect, run_jobs
from policy_helpers import DB1, PROVIDER, WEB1, body, create

BROKEN = "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003"


def execute(client, headers, plan_id, project="demo", provider=PROVIDER, **params):
    return client.post(f"/v1/{project}/providers/{provider}/checkpoints",
                       json={"checkpoint": {"plan_id": plan_id, "parameters": params}}, headers=headers)


def policy_items(runtime, policy_id):
    from sqlalchemy import select

    from opencsbs.db.models import CheckpointItem

    with runtime.sessions() as session:
        return list(session.scalars(select(CheckpointItem).where(CheckpointItem.policy_id == policy_id)
                                    .order_by(CheckpointItem.created_at)))


def test_execute_backs_up_every_server_with_policy_tags(demo, runtime):
    client, headers = demo
    b = body("nightly", resources=(WEB1, DB1))
    b["policy"]["tags"] = [{"key": "env", "value": "prod"}]
    pid = create(client, headers, b).json()["policy"]["id"]
    r = execute(client, headers, pid, auto_trigger=False)
    assert r.status_code == 200, r.text
    cp = r.json()["checkpoint"]
    assert cp["status"] == "protecting"
    assert cp["protection_plan"]["id"] == pid and cp["protection_plan"]["name"] == "nightly"
    assert sorted(x["id"] for x in cp["protection_plan"]["resources"]) == sorted([WEB1, DB1])
    made = policy_items(runtime, pid)
    assert sorted(i.resource_id for i in made) == sorted([WEB1, DB1])
    assert all(i.name.startswith("manualbk_") and not i.auto_trigger for i in made)
    assert all(i.tags == [{"key": "env", "value": "prod"}] for i in made)
    # still making them: a second manual run is refused with CSBS.1001
    r = execute(client, headers, pid)
    assert r.status_code == 500 and r.json()["error_code"] == "CSBS.1001"
    run_jobs(runtime)
    assert {i.status for i in policy_items(runtime, pid)} == {"available"}
    # a subset of the servers, automatic
    r = execute(client, headers, pid, auto_trigger=True, resources=[DB1])
    assert r.status_code == 200
    auto = [i for i in policy_items(runtime, pid) if i.auto_trigger]
    assert [i.resource_id for i in auto] == [DB1] and auto[0].name.startswith("autobk_")
    r = execute(client, headers, pid)
    assert r.status_code == 500 and r.json()["error_code"] == "CSBS.6030"
    run_jobs(runtime)


def test_execute_refusals(demo, runtime):
    client, headers = demo
    empty = create(client, headers, body("empty", resources=())).json()["policy"]["id"]
    r = execute(client, headers, empty)
    assert r.status_code == 500 and r.json() == {"error_code": "CSBS.6032", "error_msg": "plan has no resource backup"}
    broken = create(client, headers, body("broken", resources=(BROKEN,))).json()["policy"]["id"]
    r = execute(client, headers, broken)
    assert r.status_code == 500 and r.json()["error_code"] == "CSBS.6032"
    pid = create(client, headers, body("web", resources=(WEB1,))).json()["policy"]["id"]
    r = execute(client, headers, pid, resources=[DB1])
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    r = execute(client, headers, empty, resources=[])
    assert r.status_code == 500 and r.json()["error_code"] == "CSBS.6032"
    r = execute(client, headers, "00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3000"
    r = execute(client, headers, pid, provider="other")
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    r = client.post(f"/v1/demo/providers/{PROVIDER}/checkpoints", json={"checkpoint": {"plan_id": pid}},
                    headers=headers)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    # the server is being backed up by a manual protect: CSBS.2004
    assert protect(client, headers, WEB1).status_code == 200
    r = execute(client, headers, pid)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.2004"
    run_jobs(runtime)
    assert execute(client, headers, pid).status_code == 200
    run_jobs(runtime)


def test_retention_deletes_only_the_policys_automatic_backups(demo, runtime):
    from opencsbs.service.policy_runs import apply_retention

    client, headers = demo
    pid = create(client, headers, body("keep2", resources=(DB1,), max_backups=2)).json()["policy"]["id"]
    other = create(client, headers, body("other", resources=(WEB1,), max_backups=1)).json()["policy"]["id"]
    assert execute(client, headers, pid).status_code == 200  # manual: never touched by retention
    run_jobs(runtime)
    for _ in range(4):
        assert execute(client, headers, pid, auto_trigger=True).status_code == 200
        run_jobs(runtime)
    assert execute(client, headers, other, auto_trigger=True).status_code == 200
    run_jobs(runtime)
    before = policy_items(runtime, pid)
    autos = [i for i in before if i.auto_trigger]
    assert len(autos) == 4
    deleted = apply_retention(runtime, pid)
    assert sorted(deleted) == sorted(i.id for i in autos[:2])
    run_jobs(runtime)
    after = {i.id: i.status for i in policy_items(runtime, pid)}
    assert [after[i.id] for i in autos] == ["deleted", "deleted", "available", "available"]
    manual = [i for i in before if not i.auto_trigger]
    assert [after[i.id] for i in manual] == ["available"]
    assert [i.status for i in policy_items(runtime, other)] == ["available"]
    assert apply_retention(runtime, pid) == []


def test_retention_duration_uses_the_given_now(demo, runtime):
    from opencsbs.service.policy_runs import apply_retention

    client, headers = demo
    pid = create(client, headers, body("week", resources=(DB1,), retention_duration_days=7)).json()["policy"]["id"]
    assert execute(client, headers, pid, auto_trigger=True).status_code == 200
    run_jobs(runtime)
    now = utcnow()
    assert apply_retention(runtime, pid, now + timedelta(days=6)) == []
    assert len(apply_retention(runtime, pid, now + timedelta(days=8))) == 1


def test_a_run_racing_another_run_of_the_policy_gets_1001_not_2004(demo, runtime, monkeypatch):
    """Two simultaneous runs of one policy: the loser passed the "is the policy running" check before the winner
    committed its backups, then finds the servers locked. It must answer CSBS.1001 like a later run does, not
    CSBS.2004 (which means another backup or restore holds the servers). The race is replayed by hiding the
    winner's backups from the loser's first check only."""
    from opencsbs.service import policy_runs

    client, headers = demo
    pid = create(client, headers, body("web", resources=(WEB1,))).json()["policy"]["id"]
    assert execute(client, headers, pid).status_code == 200  # the winner, still protecting
    real, calls = policy_runs._running_kind, []

    def first_check_misses_the_winner(rt, policy_id):
        calls.append(policy_id)
        return None if len(calls) == 1 else real(rt, policy_id)

    monkeypatch.setattr(policy_runs, "_running_kind", first_check_misses_the_winner)
    r = execute(client, headers, pid)
    assert r.status_code == 500 and r.json()["error_code"] == "CSBS.1001", r.text
    calls.clear()
    # a server locked by something else than the policy (a manual protect) is still CSBS.2004
    run_jobs(runtime)
    assert protect(client, headers, WEB1).status_code == 200
    r = execute(client, headers, pid)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.2004", r.text
    run_jobs(runtime)
