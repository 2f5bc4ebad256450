"""``opencsbs backup list|show|delete``, ``restore list|show``, ``check SERVER...`` and the output formats
(``-f table|json|value``, ``--json``, ``-c``) with sizes in human units, on the sandbox cloud through click's runner;
``opencsbs backup SERVER`` keeps backing up a server; shell completion works as docs/cli.md shows it."""

from __future__ import annotations

import json
from datetime import datetime
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from opencsbs.cli import main
from opencsbs.cli.output import human_bytes, human_duration, human_rate

from conftest import EXAMPLE_INVENTORY

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB_1_DATA = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a02"
DB_1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"
MIB = 1024 * 1024


@pytest.fixture
def cli(tmp_path, database_url):
    runner = CliRunner()
    data = tmp_path / "cli-data"

    def run(*args, input=None, ok=True):
        result = runner.invoke(main, ["--data-dir", str(data), "--database-url", database_url, *args], input=input,
                               prog_name="opencsbs")
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    run("sandbox", "load", str(EXAMPLE_INVENTORY))
    run.data_dir = data
    return run


def test_human_units():
    assert [human_bytes(n) for n in (0, 512, 1536, 300 * MIB, 2 * 1024**3, None)] == \
        ["0 B", "512 B", "1.5 KiB", "300.0 MiB", "2.0 GiB", "-"]
    assert human_rate(12 * MIB) == "12.0 MiB/s"
    assert [human_duration(s) for s in (42, 200, 3720, 90000, None)] == ["42s", "3m20s", "1h02m", "1d01h", "-"]


def test_backup_list_show_delete_and_restore_list_show(cli, tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 * MIB))
    cli("sandbox", "write", WEB_1_DATA, "--offset", "0", "--from", str(payload))
    # options before the server id still go to "back up this server"
    item = cli("backup", "--full", "--name", "first", WEB_1, "--wait").stdout.strip().splitlines()[-1]

    table = cli("backup", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "SERVER", "STATUS", "CREATED", "DISKS", "STORED", "KIND"]
    row = next(line for line in table if line.startswith(item))
    assert "first" in row and "web-1" in row and "available" in row and "2.0 GiB" in row and "full" in row
    assert "3.0 MiB" in row  # 3 MiB of random data (and a few bytes of framing)

    listed = json.loads(cli("backup", "list", "--project", "demo", "--json").stdout)
    assert [b["id"] for b in listed] == [item] and listed[0]["extend_info"]["resource_name"] == "web-1"
    assert cli("backup", "list", "--server", DB_1, "-f", "value", "-c", "id").stdout == ""
    assert cli("backup", "list", "-f", "value", "-c", "id", "-c", "status").stdout.split() == [item, "available"]
    assert cli("backup", "list", "--project", "nobody", "-f", "value").stdout == ""

    shown = cli("backup", "show", item).stdout
    assert "disks          2.0 GiB" in shown and "project        demo" in shown
    assert f"web-1 ({WEB_1}, OS::Nova::Server)" in shown
    assert re.search(r"web-1-data \(0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a02\): 1\.0 GiB, [34]\.0 MiB stored \(rounded up to "
                     r"MiB\), full, available", shown)
    body = json.loads(cli("backup", "show", item, "-f", "json").stdout)
    assert body["id"] == item and body["stored_bytes"] >= 3 * MIB and body["source_bytes"] == 2 * 1024**3
    assert cli("backup", "show", item, "-f", "value", "-c", "status").stdout == "available\n"
    missing = cli("backup", "show", "nope", ok=False)
    assert missing.exit_code == 1 and "backup 'nope' not found" in missing.output

    restore_id = cli("restore", item).stdout.strip().splitlines()[-1]
    restores = cli("restore", "list").stdout.splitlines()
    assert restores[0].split()[:4] == ["ID", "BACKUP", "TARGET", "STATUS"]
    assert restores[1].split()[:5] == [restore_id, item, WEB_1, "success", "100%"]
    assert cli("restore", "list", "--status", "error", "-f", "value").stdout == ""
    shown = cli("restore", "show", restore_id).stdout
    assert "status" in shown and "success" in shown and f"backup         {item}" in shown
    assert json.loads(cli("restore", "show", restore_id, "--json").stdout)["checkpoint_item_id"] == item
    assert "restore 'nope' not found" in cli("restore", "show", "nope", ok=False).output

    deleted = cli("backup", "delete", item).stdout
    assert f"backup {item} (first): deleting (job " in deleted
    assert cli("backup", "show", item, "-f", "value", "-c", "status").stdout == "deleting\n"
    again = cli("backup", "delete", item, ok=False)
    assert again.exit_code == 1 and "CSBS.2003" in again.output

    bad = cli("backup", "list", "-c", "colour", ok=False)
    assert bad.exit_code == 2 and "unknown column(s) colour" in bad.output


def test_check_answers_the_protectable_question_per_server(cli):
    cli("policy", "create", "--project", "demo", "--name", "nightly", "--server", WEB_1)
    cli("sandbox", "set", DB_1, "--status", "ERROR")
    result = cli("check", WEB_1, DB_1)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVER", "NAME", "PROJECT", "PROTECTABLE", "POLICY", "REASON"]
    web = next(line for line in lines if line.startswith(WEB_1))
    db = next(line for line in lines if line.startswith(DB_1))
    assert "nightly" in web and "CSBS.6004" in web
    assert " no " in db and "CSBS.6006" in db
    verdicts = json.loads(cli("check", WEB_1, DB_1, "--json").stdout)
    assert [(v["resource_id"], v["result"], v["policy_name"]) for v in verdicts] == \
        [(WEB_1, True, "nightly"), (DB_1, False, None)]  # bound: CSBS answers result true with CSBS.6004
    missing = cli("check", "nope", ok=False)
    assert missing.exit_code == 1 and "no such server: nope" in missing.output and "server not found" in missing.output


def test_policy_output_is_a_table_unless_asked_for_json(cli):
    pid = cli("policy", "create", "--project", "demo", "--name", "p1", "--max-backups", "3", "-f", "value",
              "-c", "id").stdout.strip()
    table = cli("policy", "list", "--project", "demo").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "STATUS", "SERVERS", "SCHEDULE", "RETENTION"]
    assert table[1].split() == [pid, "p1", "suspended", "0", "FREQ=DAILY;BYHOUR=2;BYMINUTE=0", "3", "backups"]
    assert "retention    3 backups" in cli("policy", "show", "--project", "demo", pid).stdout
    assert json.loads(cli("policy", "show", "--project", "demo", pid, "-f", "json").stdout)["id"] == pid


def test_shell_completion_as_documented(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    script = subprocess.run([sys.executable, "-c", "from opencsbs.cli import run; run()"], capture_output=True,
                            text=True, timeout=60, env={**env, "_OPENCSBS_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_OPENCSBS_COMPLETE=bash_complete" in script.stdout
    words = subprocess.run([sys.executable, "-c", "from opencsbs.cli import run; run()"], capture_output=True,
                           text=True, timeout=60,
                           env={**env, "_OPENCSBS_COMPLETE": "bash_complete", "COMP_WORDS": "opencsbs backup l",
                                "COMP_CWORD": "2"})
    assert "plain,list" in words.stdout.split()


def test_token_list_revoke_and_expiry(cli, settings):
    """``token list`` shows ids (never values), ``token revoke`` makes the API refuse the token at once, and
    ``--expires`` gives a token an end."""
    import time
    from datetime import timedelta

    from opencsbs.auth.base import AuthFailed
    from opencsbs.bootstrap import build_runtime
    from opencsbs.core.timeutil import utcnow
    from opencsbs.service.tokens import create_local_token

    month = cli("token", "create", "--project", "demo", "--expires", "30d")
    assert "valid until" in month.stderr
    forever = cli("token", "create", "--project", "demo", "--role", "admin").stdout.strip().splitlines()[-1]
    assert cli("token", "create", "--project", "demo", "--expires", "2001-01-01", ok=False).exit_code == 2
    assert cli("token", "create", "--project", "demo", "--expires", "soon", ok=False).exit_code == 2
    rows = json.loads(cli("token", "list", "--json").stdout)
    assert [(r["role"], r["state"]) for r in rows] == [("member", "valid"), ("admin", "valid")]
    expires = rows[0]["expires_at"]
    assert expires and abs((datetime.fromisoformat(expires) - utcnow()) - timedelta(days=30)) < timedelta(minutes=5)
    assert rows[1]["expires_at"] is None and "never" in cli("token", "list").stdout
    assert forever not in cli("token", "list", "--json").stdout

    settings.data_dir = cli.data_dir
    rt = build_runtime(settings, migrate=False)
    try:
        assert rt.authenticator.authenticate(forever).project_id == "demo"
        assert f"token {rows[1]['id']} of demo (admin) revoked" in cli("token", "revoke", rows[1]["id"]).stdout
        with pytest.raises(AuthFailed):
            rt.authenticator.authenticate(forever)
        short = create_local_token(rt, "demo", "reader", None, expires_at=utcnow() + timedelta(seconds=1))
        time.sleep(1.2)
        with pytest.raises(AuthFailed):
            rt.authenticator.authenticate(short)
    finally:
        rt.close()
    assert [r["state"] for r in json.loads(cli("token", "list", "--all", "--json").stdout)] == \
        ["valid", "revoked", "expired"]
    assert [r["role"] for r in json.loads(cli("token", "list", "--json").stdout)] == ["member"]
    missing = cli("token", "revoke", "nope", ok=False)
    assert missing.exit_code == 1 and "token 'nope' not found" in missing.output
