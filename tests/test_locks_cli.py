"""``opencsbs locks ...`` and ``opencsbs holds ...`` (src/opencsbs/cli/locks.py) through the ``opencsbs`` command."""

from __future__ import annotations

import json

from click.testing import CliRunner

from opencsbs.cli import main

from engine_helpers import DB1, item_of, protect, run_jobs


def test_lock_and_hold_commands(demo, runtime, settings):
    client, headers = demo
    r = protect(client, headers, DB1, tags=[{"key": "case", "value": "c7"}])
    run_jobs(runtime)
    item = item_of(client, headers, r.json()["checkpoint"]["id"])
    runner = CliRunner()
    state = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]

    def run(group, *args, ok=True):
        result = runner.invoke(main, state + [group] + list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    gov = json.loads(run("locks", "create", "--project", "demo", "--mode", "governance", "--min-days", "5"))
    assert gov["mode"] == "governance" and gov["created_by"] == "opencsbs-cli"
    comp = json.loads(run("locks", "create", "--project", "demo", "--mode", "compliance", "--min-days", "3",
                          "--cooling-off-hours", "0"))
    assert [lk["id"] for lk in json.loads(run("locks", "list", "--project", "demo"))] == [gov["id"], comp["id"]]
    check = json.loads(run("locks", "check", "--project", "demo", item["id"]))
    assert check["deletable"] is False and check["lock_id"] == gov["id"] and set(check["locks"]) == {
        gov["id"], comp["id"]}
    # the project's admin cannot lift the governance lock; --bypass-governance can, and it is audited
    assert "CSBS.8104" in run("locks", "remove", "--project", "demo", gov["id"], ok=False)
    assert "removed" in run("locks", "remove", "--project", "demo", gov["id"], "--bypass-governance")
    # nothing lifts the compliance lock past its cooling-off period
    for args in (("remove", "--project", "demo", comp["id"], "--bypass-governance"),
                 ("update", "--project", "demo", comp["id"], "--min-days", "1", "--bypass-governance")):
        assert "CSBS.8103" in run("locks", *args, ok=False)
    audit = json.loads(run("locks", "audit", "--project", "demo"))
    assert [(a["action"], a["bypass"]) for a in audit] == [
        ("lock.create", False), ("lock.create", False), ("lock.remove", True)]
    # holds
    hold = json.loads(run("holds", "create", "--project", "demo", "--name", "case 7", "--tag", "case=c7"))
    assert hold["status"] == "active" and hold["tag"] == {"key": "case", "value": "c7"}
    assert "CSBS.9001" in run("holds", "create", "--project", "demo", "--name", "empty", ok=False)
    assert "CSBS.9001" in run("holds", "create", "--project", "demo", "--name", "t", "--tag", "bad key=x", ok=False)
    assert json.loads(run("locks", "check", "--project", "demo", item["id"]))["reason"] == "legal_hold"
    assert json.loads(run("holds", "release", "--project", "demo", hold["id"]))["status"] == "released"
    assert "CSBS.8107" in run("holds", "release", "--project", "demo", hold["id"], ok=False)
    assert json.loads(run("holds", "list", "--project", "demo", "--status", "active")) == []
    assert json.loads(run("holds", "show", "--project", "demo", hold["id"]))["released_by"] == "opencsbs-cli"
    assert "CSBS.8106" in run("holds", "show", "--project", "demo", "nope", ok=False)
