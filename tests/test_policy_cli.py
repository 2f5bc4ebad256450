"""``opencsbs policy ...`` and ``opencsbs scheduler --help`` through click's runner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conftest import EXAMPLE_INVENTORY
from opencsbs.cli import main
from policy_helpers import WEB1


def test_policy_commands(settings):
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]

    def run(*args, ok=True):
        result = runner.invoke(main, base + list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    run("sandbox", "load", str(EXAMPLE_INVENTORY))
    created = json.loads(run("policy", "create", "--json", "--project", "demo", "--name", "cli-policy", "--server", WEB1,
                             "--max-backups", "3"))
    assert created["status"] == "suspended" and created["resources"][0]["id"] == WEB1
    assert created["scheduled_operations"][0]["operation_definition"]["max_backups"] == "3"
    pid = created["id"]
    assert [p["id"] for p in json.loads(run("policy", "list", "--json", "--project", "demo"))] == [pid]
    assert json.loads(run("policy", "show", "--json", "--project", "demo", pid))["name"] == "cli-policy"
    updated = json.loads(run("policy", "update", "--json", "--project", "demo", pid, "--disable", "--name", "renamed"))
    assert updated["status"] == "disabled" and updated["name"] == "renamed"
    out = run("policy", "create", "--project", "demo", "--name", "bad", "--pattern", "nonsense", ok=False)
    assert "CSBS.9001" in out
    out = run("policy", "create", "--project", "demo", "--name", "renamed", ok=False)
    assert "CSBS.9007" in out
    cp = json.loads(run("policy", "run", "--json", "--project", "demo", pid))
    assert cp["status"] == "protecting" and cp["protection_plan"]["id"] == pid
    assert "deleted" in run("policy", "delete", "--project", "demo", pid)
    assert "CSBS.3000" in run("policy", "show", "--project", "demo", pid, ok=False)
    assert "scheduler" in run("scheduler", "--help")


def test_policy_list_refuses_a_limit_below_one_like_the_api(settings):
    """``GET /policies?limit=0`` (or -1) is a 400; the command line must not answer a silently shortened list
    (``limit -1`` used to drop the last policy)."""
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]
    assert runner.invoke(main, base + ["sandbox", "load", str(EXAMPLE_INVENTORY)]).exit_code == 0
    for name in ("first", "second"):
        assert runner.invoke(main, base + ["policy", "create", "--project", "demo", "--name", name]).exit_code == 0
    for limit in ("-1", "0"):
        result = runner.invoke(main, base + ["policy", "list", "--project", "demo", "--limit", limit])
        assert result.exit_code == 2 and "--limit" in result.output, result.output
    listed = runner.invoke(main, base + ["policy", "list", "--json", "--project", "demo", "--limit", "1"])
    assert [p["name"] for p in json.loads(listed.output)] == ["second"]


def test_policy_file_that_is_not_an_object_is_refused_with_a_message(settings, tmp_path):
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]
    pid = json.loads(runner.invoke(main, base + ["policy", "create", "--json", "--project", "demo", "--name", "f"]).output)["id"]
    for text in ("[]", '{"policy": []}', '"x"', "null"):
        body = tmp_path / "body.json"
        body.write_text(text)
        for args in (["create", "--project", "demo"], ["update", "--project", "demo", pid]):
            result = runner.invoke(main, base + ["policy", *args, "--file", str(body)])
            assert result.exit_code == 1, (text, args, result.output, result.exception)
            assert "must be a JSON object" in result.output and "Traceback" not in result.output


def test_policy_errors_say_why_for_the_servers_concerned(settings):
    """The wire texts "Server (...) is already in service.", "plan has no resource backup" and "duplicate service
    name" are followed by what a CLI user can act on: the policy a server is bound to, each server's refusal, the
    name already taken."""
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--database-url", settings.db_url]

    def run(*args):
        result = runner.invoke(main, base + list(args), catch_exceptions=False)
        return result.exit_code, result.output

    assert run("sandbox", "load", str(EXAMPLE_INVENTORY))[0] == 0
    code, out = run("policy", "create", "--json", "--project", "demo", "--name", "first", "--server", WEB1)
    first = json.loads(out)["id"]
    code, out = run("policy", "create", "--project", "demo", "--name", "second", "--server", WEB1)
    assert code == 1 and "CSBS.6004" in out
    assert f"bound to backup policy first ({first})" in out

    code, out = run("policy", "create", "--project", "demo", "--name", "first")
    assert code == 1 and "CSBS.9007: duplicate service name" in out
    assert "project demo already has a policy named 'first'" in out

    assert run("sandbox", "set", WEB1, "--status", "ERROR")[0] == 0
    code, out = run("policy", "run", "--project", "demo", first)
    assert code == 1 and "CSBS.6032" in out
    assert f"{WEB1}: CSBS.6006" in out and "ERROR" in out
