"""Verify jobs and restore drills on the real bank and the real sandbox driver (docs/verify.md).

Each test fails without the guarantee it names: a flipped byte and a removed chunk are found by a verify job and
reported on exactly the backups that use them (and those turn CSBS ``error``); a backup verified recently is
skipped; a drill passes with its RTO recorded, and a drill of a corrupted backup fails and says so.
"""

from __future__ import annotations

import pytest

from engine_helpers import (BMS1, DB1, DB1_SYS, MIB, WEB1, WEB1_SYS, item_of, protect, random_bytes, restore,
                            run_jobs, write)
from opencsbs.bank.layout import chunk_key

V = "/opencsbs/v1/demo"
#: a server of project other-project in examples/sandbox.yaml
OTHERS_SERVER = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d0013"
NO_SERVER = {"error_code": "CSBS.6000", "error_msg": "server do not exist"}
DAILY = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=3;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"


@pytest.fixture
def admin(demo, make_token):
    client, member = demo
    return client, member, {"X-Auth-Token": make_token("demo", "admin")}


def _backup(client, headers, server, **param) -> dict:
    r = protect(client, headers, server, **param)
    assert r.status_code == 200, r.text
    run_jobs(client.app.state.runtime)
    item = item_of(client, headers, r.json()["checkpoint"]["id"])
    assert item["status"] == "available", item
    return item


def _addresses(runtime, item) -> set[str]:
    bank = runtime.bank
    out: set[str] = set()
    for vb in item["extend_info"]["volume_backups"]:
        name = f"checkpoints/{item['checkpoint_id']}/{vb['id']}"
        out |= bank.read_index(name).addresses()
    return out


def _status(client, headers, item_id) -> dict:
    return client.get(f"/v1/demo/checkpoint_items/{item_id}", headers=headers).json()["checkpoint_item"]


def _verify(client, headers, **body) -> dict:
    r = client.post(f"{V}/verify_runs", json={"verify_run": body}, headers=headers)
    assert r.status_code == 200, r.text
    run_jobs(client.app.state.runtime)
    r = client.get(f"{V}/verify_runs/{r.json()['verify_run']['id']}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["verify_run"]


@pytest.fixture
def three(admin, runtime):
    """Two backups of db-1 sharing chunks (a full one and an incremental one) and one of web-1 sharing none."""
    client, member, adm = admin
    write(runtime, DB1_SYS, 0, random_bytes(3 * MIB, 1))
    first = _backup(client, member, DB1)
    write(runtime, DB1_SYS, 8 * MIB, random_bytes(2 * MIB, 2))
    second = _backup(client, member, DB1)
    write(runtime, WEB1_SYS, 0, random_bytes(2 * MIB, 3))
    other = _backup(client, member, WEB1)
    a, b, c = _addresses(runtime, first), _addresses(runtime, second), _addresses(runtime, other)
    assert a & b and (b - a) and not (c & (a | b))
    return client, member, adm, (first, a), (second, b), (other, c)


def test_flipped_byte_and_removed_chunk_mark_exactly_the_backups_that_use_them(three, runtime, make_token):
    client, member, adm, (first, a), (second, b), (other, c) = three
    store = runtime.bank.store
    shared = sorted(a & b)[0]
    only_second = sorted(b - a)[0]
    blob = bytearray(store.get(chunk_key(shared)))
    blob[len(blob) // 2] ^= 0x01
    store.put(chunk_key(shared), bytes(blob))
    store.delete(chunk_key(only_second))
    # a reader may read but not start a run
    reader = {"X-Auth-Token": make_token("demo", "reader")}
    r = client.post(f"{V}/verify_runs", json={}, headers=reader)
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0302"
    run = _verify(client, adm)
    assert run["status"] == "damaged"
    assert sorted(run["affected"]) == sorted([first["id"], second["id"]])
    assert sorted(run["verified"]) == sorted([first["id"], second["id"], other["id"]])
    problems = {p["chunk"]: p["problem"] for p in run["problems"]}
    assert problems == {shared: "damaged", only_second: "missing"}
    # per backup: the record, and a CSBS status that is no longer "available"
    v1 = client.get(f"{V}/checkpoint_items/{first['id']}/verification", headers=member).json()["verification"]
    assert v1["verify_result"] == "damaged" and {p["chunk"] for p in v1["problems"]} == {shared}
    v2 = client.get(f"{V}/checkpoint_items/{second['id']}/verification", headers=member).json()["verification"]
    assert {p["chunk"] for p in v2["problems"]} == {shared, only_second}
    v3 = client.get(f"{V}/checkpoint_items/{other['id']}/verification", headers=member).json()["verification"]
    assert v3["verify_result"] == "ok" and v3["problems"] == [] and v3["status"] == "available"
    for item in (first, second):
        wire = _status(client, member, item["id"])
        assert wire["status"] == "error"
        assert wire["extend_info"]["fail_code"]["Code"] == 8203
        assert wire["extend_info"]["fail_reason"].startswith(f"Backup ({item['id']}) data is damaged: ")
        assert wire["extend_info"]["fail_op"] == "verify"
    assert _status(client, member, other["id"])["status"] == "available"
    # a damaged backup cannot be restored through CSBS
    r = restore(client, member, second, DB1)
    assert 400 <= r.status_code < 500 and r.json()["error_code"].startswith("CSBS."), r.text
    damaged = client.get(f"{V}/verifications", params={"result": "damaged"}, headers=member).json()
    assert sorted(v["checkpoint_item_id"] for v in damaged["verifications"]) == sorted([first["id"], second["id"]])
    # the shared chunk repaired and the missing one put back: the next run clears the mark of the first only
    blob[len(blob) // 2] ^= 0x01
    store.put(chunk_key(shared), bytes(blob))
    run = _verify(client, adm, checkpoint_item_ids=[first["id"]])
    assert run["status"] == "ok" and run["affected"] == []
    assert _status(client, member, first["id"])["status"] == "available"


def test_recently_verified_backups_are_skipped(three, runtime):
    client, member, adm, (first, _a), (second, _b), (other, _c) = three
    run = _verify(client, adm, checkpoint_item_ids=[first["id"], other["id"]])
    assert run["status"] == "ok" and sorted(run["verified"]) == sorted([first["id"], other["id"]])
    run = _verify(client, adm, outdated_after_days=7)
    assert run["verified"] == [second["id"]]
    assert sorted(run["skipped"]) == sorted([first["id"], other["id"]])
    run = _verify(client, adm, outdated_after_days=0)
    assert run["skipped"] == [] and len(run["verified"]) == 3


def test_drill_passes_with_its_rto_and_catches_a_corrupted_backup(three, runtime):
    client, member, adm, (first, a), (second, b), (other, _c) = three
    r = client.post(f"{V}/drills", json={"drill": {"choice": "latest", "server_id": DB1}}, headers=adm)
    assert r.status_code == 200, r.text
    drill = r.json()["drill"]
    assert drill["checkpoint_item_id"] == second["id"] and drill["status"] == "pending"
    run_jobs(runtime)
    drill = client.get(f"{V}/drills/{drill['id']}", headers=member).json()["drill"]
    assert drill["status"] == "passed", drill
    assert drill["rto_seconds"] is not None and drill["rto_seconds"] > 0
    assert drill["bytes_restored"] == sum(v["bytes"] for v in drill["volumes"]) > 0
    assert not list((runtime.settings.data_dir / "drills").glob("*/*")), "scratch copy left behind"
    v = client.get(f"{V}/checkpoint_items/{second['id']}/verification", headers=member).json()["verification"]
    assert v["drill_result"] == "passed" and v["drill_rto_seconds"] == drill["rto_seconds"]
    # exported as metrics per server: the time of the last good drill and its RTO
    from test_operations import scrape

    got = scrape(client)
    key = (("project_id", "demo"), ("server_id", DB1))
    assert got[("opencsbs_drill_rto_seconds", key)] == drill["rto_seconds"]
    assert got[("opencsbs_last_good_drill_timestamp_seconds", key)] > 1.7e9
    # a flipped byte in a chunk of the first backup: its drill fails and names it
    victim = sorted(a)[0]
    store = runtime.bank.store
    blob = bytearray(store.get(chunk_key(victim)))
    blob[-1] ^= 0x80
    store.put(chunk_key(victim), bytes(blob))
    r = client.post(f"{V}/drills", json={"drill": {"choice": "id", "checkpoint_item_id": first["id"]}}, headers=adm)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    drill = client.get(f"{V}/drills/{r.json()['drill']['id']}", headers=member).json()["drill"]
    assert drill["status"] == "failed" and drill["rto_seconds"] is None
    wire = _status(client, member, first["id"])
    assert wire["status"] == "error" and f"restore drill {drill['id']}" in wire["extend_info"]["fail_reason"]
    got = scrape(client)
    assert got[("opencsbs_drill_rto_seconds", key)] == v["drill_rto_seconds"]  # a failed drill changes neither
    assert got[("opencsbs_damaged_backups", (("project_id", "demo"),))] == 1
    listed = client.get(f"{V}/drills", params={"server_id": DB1}, headers=member).json()["drills"]
    assert [d["status"] for d in listed] == ["failed", "passed"]
    # bad requests are 4xx with a code
    r = client.post(f"{V}/drills", json={"drill": {"choice": "id"}}, headers=adm)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001"
    r = client.post(f"{V}/drills", json={"drill": {"choice": "latest", "server_id": "nope"}}, headers=adm)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.6000"
    assert client.get(f"{V}/drills/nope", headers=member).json()["error_code"] == "CSBS.8202"


def test_a_foreign_project_sees_nothing(three, make_token):
    client, member, adm, (first, _a), _s, _o = three
    _verify(client, adm)
    foreign = {"X-Auth-Token": make_token("other", "admin")}
    for path in ("verify_runs", "drills", "verifications", "check_schedules",
                 f"checkpoint_items/{first['id']}/verification"):
        r = client.get(f"{V}/{path}", headers=foreign)
        assert r.status_code == 403, (path, r.text)
    r = client.get(f"/opencsbs/v1/other/checkpoint_items/{first['id']}/verification", headers=foreign)
    assert r.status_code == 404 and r.json()["error_code"] == "CSBS.3001"
    assert client.get("/opencsbs/v1/other/verify_runs", headers=foreign).json() == {"verify_runs": []}


def test_scheduled_verify_runs_start_from_housekeeping(three, runtime):
    from datetime import timedelta

    from opencsbs.core.timeutil import utcnow
    from opencsbs.service import verify

    client, member, adm, *_ = three
    r = client.post(f"{V}/check_schedules", json={"check_schedule": {
        "kind": "verify", "pattern": DAILY, "parameters": {"outdated_after_days": 7}}},
        headers=adm)
    assert r.status_code == 200, r.text
    sched = r.json()["check_schedule"]
    assert verify.start_due(runtime, utcnow()) == 0
    assert verify.start_due(runtime, utcnow() + timedelta(days=1, hours=1)) == 1
    assert verify.start_due(runtime, utcnow() + timedelta(days=1, hours=1)) == 0  # moved to its next slot
    run_jobs(runtime)
    runs = client.get(f"{V}/verify_runs", headers=member).json()["verify_runs"]
    assert len(runs) == 1 and runs[0]["schedule_id"] == sched["id"] and runs[0]["status"] == "ok"
    r = client.post(f"{V}/check_schedules", json={"check_schedule": {"kind": "verify", "pattern": "nonsense"}},
                    headers=adm)
    assert r.status_code == 400 and r.json()["error_code"] == "CSBS.9001", r.text


def test_the_command_line_names_the_affected_backups(three, runtime):
    import json

    from click.testing import CliRunner

    from opencsbs.cli import main

    client, member, adm, (first, a), (second, b), (other, _c) = three
    store = runtime.bank.store
    only_second = sorted(b - a)[0]
    store.delete(chunk_key(only_second))
    base = ["--data-dir", str(runtime.settings.data_dir), "--database-url", runtime.settings.db_url]
    runner = CliRunner()
    # the bank's own verify names the backup that needs the missing chunk, and only it
    res = runner.invoke(main, [*base, "bank", "verify", "--no-progress"])
    assert res.exit_code == 1, res.output
    assert f"missing chunk {only_second}" in res.output
    assert f"affected backup {second['id']} (project demo, server db-1, available)" in res.output
    assert first["id"] not in res.output and other["id"] not in res.output
    res = runner.invoke(main, [*base, "bank", "verify", "--json", "--no-progress"])
    assert [e["checkpoint_item_id"] for e in json.loads(res.output)["affected_backups"]] == [second["id"]]
    # a verify run from the command line records it and exits 1
    res = runner.invoke(main, [*base, "verify", "run", "--project", "demo", "--wait"])
    assert res.exit_code == 1, res.output
    run = json.loads(res.output[res.output.index("{"):])
    assert run["status"] == "damaged" and run["affected"] == [second["id"]]
    res = runner.invoke(main, [*base, "verify", "backups", "--project", "demo", "--result", "damaged"])
    assert [v["checkpoint_item_id"] for v in json.loads(res.output)] == [second["id"]]
    # a drill of the sound web-1 backup passes; of the damaged one it is refused unless named by id
    res = runner.invoke(main, [*base, "drill", "run", "--project", "demo", "--server", WEB1, "--wait"])
    assert res.exit_code == 0, res.output
    drill = json.loads(res.output[res.output.index("{"):])
    assert drill["status"] == "passed" and drill["checkpoint_item_id"] == other["id"] and drill["rto_seconds"] > 0
    res = runner.invoke(main, [*base, "drill", "list", "--project", "demo"])
    assert [d["id"] for d in json.loads(res.output)] == [drill["id"]]


def test_a_drill_of_a_server_the_project_does_not_have_is_refused_as_check_protectable_does(three, runtime):
    """An unknown ``server_id`` (a typo, another project's server) is 400 CSBS.6000 "server do not exist", the code
    check_protectable gives it, not 409 CSBS.8204 "no available backup" (which sends the user looking for backups
    of a server that is not there); a server of the project without an available backup stays 409 CSBS.8204."""
    client, member, adm, _f, (second, _b), _o = three
    for server in ("nope", OTHERS_SERVER):
        for choice in ("latest", "random"):
            r = client.post(f"{V}/drills", json={"drill": {"choice": choice, "server_id": server}}, headers=adm)
            assert (r.status_code, r.json()) == (400, NO_SERVER), (server, choice, r.text)
    r = client.post(f"{V}/drills", json={"drill": {"server_id": BMS1}}, headers=adm)
    assert r.status_code == 409 and r.json() == {
        "error_code": "CSBS.8204", "error_msg": f"No backup to drill: server {BMS1} has no available backup"}
    r = client.post(f"{V}/drills", json={"drill": {"server_id": DB1}}, headers=adm)
    assert r.status_code == 200 and r.json()["drill"]["resource_id"] == DB1, r.text
    # a server gone from the cloud whose backups the project keeps can still be drilled
    from opencsbs.clouds.sandbox.models import SandboxServer
    from opencsbs.db.base import transaction

    with transaction(runtime.sessions) as session:
        session.delete(session.get(SandboxServer, DB1))
    r = client.post(f"{V}/drills", json={"drill": {"server_id": DB1}}, headers=adm)
    assert r.status_code == 200 and r.json()["drill"]["checkpoint_item_id"] == second["id"], r.text
    assert client.get(f"{V}/drills", headers=member).json()["drills"][0]["resource_id"] == DB1


def test_a_drill_schedule_checks_its_server_and_a_bad_pattern_names_its_own_field(three):
    client, member, adm, *_ = three

    def schedule(**body):
        return client.post(f"{V}/check_schedules", json={"check_schedule": {"pattern": DAILY, **body}}, headers=adm)

    for server in ("nope", OTHERS_SERVER):
        r = schedule(kind="drill", parameters={"server_id": server})
        assert (r.status_code, r.json()) == (400, NO_SERVER), (server, r.text)
    # a server of the project is accepted whether or not it has a backup yet
    for server in (BMS1, DB1):
        r = schedule(kind="drill", parameters={"server_id": server})
        assert r.status_code == 200 and r.json()["check_schedule"]["parameters"]["server_id"] == server, r.text
    assert len(client.get(f"{V}/check_schedules", headers=member).json()["check_schedules"]) == 2
    # the pattern's error names this body's field, not a policy's trigger.properties.pattern
    for kind in ("verify", "drill"):
        r = schedule(kind=kind, pattern="garbage")
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["error_code"] == "CSBS.9001"
        assert body["error_msg"].startswith("Invalid request parameters: check_schedule.pattern is not an iCalendar "
                                            "event"), body
        assert "trigger" not in body["error_msg"]
    r = schedule(kind="verify", pattern=DAILY.replace("BYHOUR=3", "BYHOUR=3,3"))
    assert r.json()["error_msg"] == ("Invalid request parameters: check_schedule.pattern RRULE BYHOUR values must "
                                     "not repeat"), r.text
