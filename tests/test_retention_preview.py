"""Retention dry-run: ``GET /opencsbs/v1/{project}/policies/{id}/retention_preview`` and ``opencsbs policy
retention --dry-run`` say which automatic backups the next retention pass deletes and why (the rule, or the hold
that keeps one), delete nothing, and agree with what :func:`apply_retention` then does (and logs)."""

from __future__ import annotations

import json
import logging

from click.testing import CliRunner

from engine_helpers import run_jobs
from opencsbs.cli import main
from policy_helpers import DB1, PROVIDER, body, create


def _auto_run(client, headers, pid):
    r = client.post(f"/v1/demo/providers/{PROVIDER}/checkpoints", headers=headers,
                    json={"checkpoint": {"plan_id": pid, "parameters": {"auto_trigger": True}}})
    assert r.status_code == 200, r.text


def _items(client, headers, pid):
    return client.get("/v1/demo/checkpoint_items", params={"policy_id": pid, "sort": "created_at:asc"},
                      headers=headers).json()["checkpoint_items"]


def test_preview_names_the_rule_and_the_hold_and_deletes_nothing(demo, runtime, make_token, settings, caplog):
    from opencsbs.service.policy_runs import apply_retention

    client, headers = demo
    admin = {"X-Auth-Token": make_token("demo", "admin")}
    pid = create(client, headers, body("keep2", resources=(DB1,), max_backups=2)).json()["policy"]["id"]
    for _ in range(4):
        _auto_run(client, headers, pid)
        run_jobs(runtime)
    oldest, second, third, newest = [i["id"] for i in _items(client, headers, pid)]
    hold = client.post("/opencsbs/v1/demo/holds", headers=admin,
                       json={"hold": {"name": "case-7", "checkpoint_item_ids": [oldest]}})
    assert hold.status_code == 200, hold.text

    url = f"/opencsbs/v1/demo/policies/{pid}/retention_preview"
    preview = client.get(url, headers=headers).json()["retention_preview"]
    assert preview["rule"] == {"max_backups": 2}
    rows = {b["checkpoint_item_id"]: b for b in preview["backups"]}
    assert set(rows) == {oldest, second}
    assert rows[second]["action"] == "delete" and rows[second]["reason"] == "beyond the 2 newest (max_backups)"
    assert rows[oldest]["action"] == "kept_by_lock" and rows[oldest]["error_code"].startswith("CSBS.81")
    assert "beyond the 2 newest (max_backups); kept: " in rows[oldest]["reason"]
    everything = client.get(url, params={"include_kept": "true"}, headers=headers).json()["retention_preview"]
    kept = {b["checkpoint_item_id"]: b["reason"] for b in everything["backups"] if b["action"] == "keep"}
    assert kept == {third: "one of the 2 newest (max_backups)", newest: "one of the 2 newest (max_backups)"}
    assert [i["status"] for i in _items(client, headers, pid)] == ["available"] * 4  # nothing deleted

    # the command line shows the same, in a table or as the route's JSON
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]
    runner = CliRunner()
    table = runner.invoke(main, [*base, "policy", "retention", "--dry-run", pid, "--project", "demo"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["BACKUP", "NAME", "SERVER", "CREATED", "ACTION", "REASON"]
    assert "1 backup(s) to delete, 1 kept by a lock or hold" in table.stderr
    values = runner.invoke(main, [*base, "policy", "retention", "--dry-run", pid, "--project", "demo",
                                  "-f", "value", "-c", "backup", "-c", "action"])
    assert sorted(values.stdout.splitlines()) == sorted([f"{second} delete", f"{oldest} kept_by_lock"])
    as_json = json.loads(runner.invoke(main, [*base, "policy", "retention", "--dry-run", pid, "--project", "demo",
                                              "--json"]).stdout)
    assert as_json["backups"] == preview["backups"]
    refused = runner.invoke(main, [*base, "policy", "retention", pid, "--project", "demo"])
    assert refused.exit_code == 2 and "--dry-run" in refused.output
    unknown = runner.invoke(main, [*base, "policy", "retention", "--dry-run", "nope", "--project", "demo"])
    assert unknown.exit_code == 1 and "CSBS.3000" in unknown.output
    assert client.get("/opencsbs/v1/demo/policies/nope/retention_preview", headers=headers).status_code == 404

    # the real pass deletes exactly what the preview said, and logs each deletion with its rule
    with caplog.at_level(logging.INFO, logger="opencsbs.policies"):
        assert apply_retention(runtime, pid) == [second]
    lines = [r.getMessage() for r in caplog.records if r.name == "opencsbs.policies"]
    assert f"retention of policy {pid}: deleting backup {second} of server {DB1}: beyond the 2 newest " \
           "(max_backups)" in lines
    assert any(line.startswith(f"retention of policy {pid}: backup {oldest} kept: ") for line in lines)
