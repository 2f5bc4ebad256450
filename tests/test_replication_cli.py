"""``opencsbs replication copy`` and disaster recovery: a backup copied to a replica (a local folder here; the
S3 pairs are in test_replication*.py), then the database dropped, a new site whose bank is the replica rebuilds
the catalog with ``opencsbs bank rebuild-catalog`` and restores the server byte-exact."""

from __future__ import annotations

import hashlib
import json
import os

import yaml
from click.testing import CliRunner

from opencsbs.cli import main

DB1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
DB1_SYS = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b1001"
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "sandbox.yaml")


def _cli(data, url, config):
    runner = CliRunner()

    def run(*args, input=None, ok=True):
        result = runner.invoke(main, ["--config", str(config), "--data-dir", str(data), "--database-url", url,
                                      *args], input=input)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


def test_copy_then_rebuild_the_catalog_from_the_replica_after_the_database_is_lost(tmp_path, database_url):
    replica_dir = tmp_path / "replica"
    site_a = tmp_path / "site-a.yaml"
    site_a.write_text(yaml.safe_dump({"replicas": [{"name": "dr", "backend": "local", "path": str(replica_dir),
                                                    "fsync": False}], "bank": {"fsync": False}}))
    a = _cli(tmp_path / "a", database_url, site_a)
    a("sandbox", "load", EXAMPLE)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(9 << 20))
    a("sandbox", "write", DB1_SYS, "--offset", "0", "--from", str(payload))
    before = a("sandbox", "hash", DB1_SYS).output.strip().splitlines()[-1]
    item_id = a("backup", DB1, "--wait").output.strip().splitlines()[-1]

    out = a("replication", "copy", item_id, "--to", "dr", "--wait").output
    copy = json.loads(out[out.index("{"):])["copy"]
    assert copy["status"] == "available" and copy["sent_bytes"] >= 9 << 20
    assert json.loads(a("replication", "copies", item_id).output)["copies"][0]["id"] == copy["id"]
    bad = a("replication", "copy", item_id, "--to", "nowhere", ok=False)
    assert bad.exit_code == 1 and "CSBS.9001" in bad.output and "Traceback" not in bad.output

    # site A is lost: a new site with an empty database and the replica as its bank
    site_b = tmp_path / "site-b.yaml"
    site_b.write_text(yaml.safe_dump({"bank": {"backend": "local", "path": str(replica_dir), "fsync": False}}))
    new_db = f"sqlite:///{tmp_path / 'site-b.db'}"
    b = _cli(tmp_path / "b", new_db, site_b)
    b("db", "upgrade")
    b("sandbox", "load", EXAMPLE)
    report = json.loads(b("bank", "rebuild-catalog").output)
    assert report["restored"] == [item_id] and not report["errors"]
    assert json.loads(b("bank", "rebuild-catalog").output)["present"] == [item_id]  # idempotent
    b("restore", item_id)
    assert b("sandbox", "hash", DB1_SYS).output.strip().splitlines()[-1] == before


def test_rule_retention_and_lag_from_the_cli(tmp_path, database_url):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"replicas": [{"name": "dr", "backend": "local", "path": str(tmp_path / "replica"),
                                                  "fsync": False}], "bank": {"fsync": False}}))
    run = _cli(tmp_path / "a", database_url, site)
    run("sandbox", "load", EXAMPLE)
    policy_id = run("policy", "create", "--project", "demo", "--name", "nightly", "--server", DB1,
                    "--max-backups", "5", "-f", "value", "-c", "id").output.strip()
    rule = json.loads(run("replication", "rule", "add", policy_id, "--to", "dr", "--max-backups", "2").output)["rule"]
    assert rule["max_backups"] == 2 and rule["retention_duration_days"] is None
    changed = json.loads(run("replication", "rule", "set", rule["id"], "--retention-days", "30").output)["rule"]
    assert changed["max_backups"] is None and changed["retention_duration_days"] == 30
    bad = run("replication", "rule", "set", rule["id"], "--max-backups", "-7", ok=False)
    assert bad.exit_code == 1 and "CSBS.9001" in bad.output and "Traceback" not in bad.output
    [lag] = json.loads(run("replication", "rule", "list").output)["rules"]
    assert lag["id"] == rule["id"] and lag["pending"] == 0 and lag["copies"] == 0 and lag["last_success"] is None
    done = json.loads(run("replication", "run").output)
    assert done == {"started": 0, "removed": [], "kept": {}, "failed": {}}
