"""Errors of the ``opencsbs`` command as a person reads them, from a real process: one line naming what is wrong
and where (inventory file, database URL without its password), exit code 2 for configuration mistakes and 1 for
failures, never a traceback unless ``--debug``; ``-h`` as well as ``--help``; help texts without reST markup."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from opencsbs.cli import main

from conftest import PG_ADMIN_URL, free_port


def run(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "opencsbs", "--data-dir", str(tmp_path / "d"), *args],
                          capture_output=True, text=True, timeout=120, env=clean)


def one_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


BAD = "projects:\n  demo:\n    servers:\n      - {id: a, name: x, status: ACTIV, volumes: []}\n"
TYPO = "projects:\n  demo:\n    server:\n      - {id: c, name: x, status: ACTIVE}\n"


@pytest.mark.parametrize("text, words", [
    (BAD, "server a: status must be one of ACTIVE"),
    (TYPO, "project demo: unknown key(s) ['server'] (did you mean 'servers'?)"),
    ("projects: [\n", "not valid YAML: line 2, column 1: expected the node content"),
])
def test_serve_with_a_bad_inventory_says_so_in_one_line(tmp_path, text, words):
    """``serve --inventory`` with a bad inventory printed a 40-line traceback."""
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(text)
    line = one_line(run(tmp_path, "serve", "--inventory", str(inventory), "--port", str(free_port())), 1)
    assert line.startswith(f"Error: invalid inventory {inventory}: ") and words in line


def test_sandbox_load_refuses_a_typo_at_project_level(tmp_path):
    """It answered "loaded 0 servers, 0 volumes" and exit 0."""
    inventory = tmp_path / "typo.yaml"
    inventory.write_text(TYPO)
    line = one_line(run(tmp_path, "sandbox", "load", str(inventory)), 1)
    assert line == "Error: project demo: unknown key(s) ['server'] (did you mean 'servers'?)"


def _pg_reachable() -> bool:
    import socket

    url = make_url(PG_ADMIN_URL)
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _pg_reachable(), reason="no PostgreSQL server")
def test_a_database_that_does_not_exist_is_one_line_without_the_password(tmp_path):
    url = make_url(PG_ADMIN_URL).set(database="does_not_exist", password="s3cret-pw")
    line = one_line(run(tmp_path, "--database-url", url.render_as_string(hide_password=False), "sandbox", "list"),
                    1)
    assert line.startswith(f"Error: cannot connect to the database at {url.host}:{url.port or 5432}/does_not_exist: ")
    assert "s3cret-pw" not in line


def test_a_refused_port_names_where(tmp_path):
    port = free_port()
    line = one_line(run(tmp_path, "--database-url", f"postgresql://u:pw@127.0.0.1:{port}/x", "sandbox", "list"), 1)
    assert line.startswith(f"Error: cannot connect to the database at 127.0.0.1:{port}/x: ")
    assert "refused" in line.lower() and ":pw@" not in line


@pytest.mark.parametrize("url, words", [
    ("not a url", "Error: invalid database URL 'not a url': "),
    ("mysql://x@h/x", "Error: database URL mysql://x@h/x: its driver is not installed (No module named"),
    ("nosuchdb://x@h/x", "Error: database URL nosuchdb://x@h/x: unknown database kind"),
])
def test_a_database_url_that_cannot_be_used_is_a_configuration_error(tmp_path, url, words):
    assert one_line(run(tmp_path, "--database-url", url, "sandbox", "list"), 2).startswith(words)


def test_serve_with_an_unreachable_database_is_one_line(tmp_path):
    port = free_port()
    line = one_line(run(tmp_path, "--database-url", f"postgresql://u@127.0.0.1:{port}/x", "serve", "--port",
                        str(free_port())), 1)
    assert line.startswith(f"Error: cannot connect to the database at 127.0.0.1:{port}/x")


def test_debug_shows_the_traceback(tmp_path):
    result = run(tmp_path, "--debug", "--database-url", "not a url", "sandbox", "list")
    assert result.returncode == 1 and "Traceback" in result.stderr and "ArgumentError" in result.stderr
    env = run(tmp_path, "--database-url", "not a url", "sandbox", "list", OPENCSBS_DEBUG="1")
    assert "Traceback" in env.stderr


def _commands(group, path=()):
    import click

    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


@pytest.mark.parametrize("path", [path for path, _ in _commands(main)], ids=lambda p: " ".join(p) or "opencsbs")
def test_every_command_takes_dash_h_and_its_help_has_no_rst_markup(path):
    result = CliRunner().invoke(main, [*path, "-h"], prog_name="opencsbs")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: opencsbs")
    assert "``" not in result.output
    options = [line for line in result.output.splitlines() if line.startswith("  --data-dir")]
    assert all(len(line.split(None, 2)) == 3 for line in options), result.output  # every --data-dir has a help text


def test_policy_messages_speak_of_fields_not_internals(tmp_path, database_url):
    runner = CliRunner()
    state = ["--data-dir", str(tmp_path / "d"), "--database-url", database_url]
    bad = runner.invoke(main, [*state, "policy", "create", "--project", "demo", "--name", "bad name!"])
    assert bad.exit_code == 1
    assert "Error: invalid policy: name: " in bad.output and "Value error" not in bad.output
    assert "('policy'" not in bad.output
    made = runner.invoke(main, [*state, "policy", "create", "--project", "demo", "--name", "ok", "-f", "value",
                                "-c", "id"])
    assert made.exit_code == 0, made.output
    pattern = runner.invoke(main, [*state, "policy", "update", "--project", "demo", made.output.strip(),
                                   "--pattern", "FREQ=HOURLY"])
    assert pattern.exit_code == 1
    assert "(ValueError)" not in pattern.output and "RRULE:FREQ=DAILY" in pattern.output


# --- what a new user's trial found ------------------------------------------------------------------------------

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
BROKEN_1 = "2b8f3c2a-6e0a-4b7e-9a51-3c6b4b2c0003"  # status ERROR in the example inventory


@pytest.fixture
def local(tmp_path, database_url):
    """``local(*args) -> Result``: the CLI (CliRunner) on a sandbox with the example inventory; ``local.state``:
    the ``--data-dir``/``--database-url`` options."""
    from conftest import EXAMPLE_INVENTORY

    state = ["--data-dir", str(tmp_path / "d"), "--database-url", database_url]

    def invoke(*args):
        return CliRunner().invoke(main, [*state, *args], prog_name="opencsbs")

    assert invoke("sandbox", "load", str(EXAMPLE_INVENTORY)).exit_code == 0
    invoke.state = state
    return invoke


def closed_pipe_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI as a process whose stdout is a pipe nobody reads any more (``| head -1`` that has already read its
    line): its first write fails with EPIPE, every time."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCSBS_", "OS_"))}
    clean.update(env or {})
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "opencsbs", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, env=clean)
    finally:
        os.close(write_end)


def test_a_reader_that_stops_early_ends_the_command_quietly(local):
    """``opencsbs backup list -f value -c id | head -1`` printed ``Error: BrokenPipeError: [Errno 32] Broken pipe``
    and exited 1."""
    assert local("backup", WEB_1, "--wait").exit_code == 0
    for args in (["backup", "list", "-f", "value", "-c", "id"], ["backup", "list"], ["--debug", "backup", "list"],
                 ["backup", "-h"], ["-h"]):
        result = closed_pipe_run(*local.state, *args)
        assert (result.returncode, result.stderr) == (0, ""), (args, result.stderr)


def test_bank_retain_without_object_lock_is_an_error_on_stderr(tmp_path, database_url):
    """It printed ``error: the bank ... does not enforce retention`` on stdout."""
    result = run(tmp_path, "--database-url", database_url, "bank", "retain")
    line = one_line(result, 2)
    assert line.startswith("Error: the bank ") and line.endswith("does not enforce retention "
                                                                   "(bank.s3_object_lock is off)")
    assert result.stdout == ""


def test_refusals_about_servers_are_one_line(local):
    """The CSBS refusal was followed by an indented line per server repeating it."""
    failed = local("backup", BROKEN_1, "--wait")
    assert failed.exit_code == 1
    assert failed.stderr == f"Error: CSBS.6006: Server ({BROKEN_1}) status (ERROR) is not allowed to protect.\n"
    first = local("policy", "create", "--project", "demo", "--name", "p1", "--server", WEB_1, "-f", "value", "-c",
                  "id")
    assert first.exit_code == 0, first.output
    bound = local("policy", "create", "--project", "demo", "--name", "p3", "--server", WEB_1)
    assert bound.exit_code == 1 and len(bound.stderr.splitlines()) == 1, bound.stderr
    assert bound.stderr.startswith(f"Error: CSBS.6004: Server ({WEB_1}) is already in service. It is bound to "
                                   f"backup policy p1 ({first.stdout.strip()}) and cannot join another.")


def test_bad_values_are_usage_errors(local, tmp_path):
    """``--tag novalue`` made a hold of tag {"key": "novalue", "value": ""}; ``--param noequals``, a ``--file`` that
    is not JSON and ``--max-backups -5`` exited 1."""
    tag = local("holds", "create", "--project", "demo", "--name", "x", "--tag", "novalue")
    assert tag.exit_code == 2 and "Invalid value for '--tag': 'novalue' is not KEY=VALUE" in tag.stderr
    assert local("holds", "list", "--project", "demo").stdout.strip() == "[]"
    param = local("verify", "schedule", "--project", "demo", "--kind", "verify", "--param", "noequals",
                  "--pattern", "BEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=0\r\nEND:VEVENT")
    assert param.exit_code == 2 and "Invalid value for '--param': 'noequals' is not KEY=VALUE" in param.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{bad")
    for args in (["create", "--project", "demo"], ["update", "--project", "demo", "some-policy"]):
        not_json = local("policy", *args, "--file", str(bad))
        assert not_json.exit_code == 2, not_json.output
        assert not_json.stderr.startswith(f"Error: --file {bad}: not JSON (")
        assert len(not_json.stderr.splitlines()) == 1
    for option in ("--max-backups", "--retention-days"):
        negative = local("policy", "create", "--project", "demo", "--name", "p", option, "-5")
        assert negative.exit_code == 2 and f"Invalid value for '{option}': -5 is not in the range" in negative.stderr
    assert local("policy", "list", "--project", "demo", "-f", "value").stdout == ""


def test_backup_and_restore_help_name_the_command_as_it_is_typed():
    """``opencsbs restore ITEM -h`` read ``Usage: opencsbs restore now ...`` and ``opencsbs restore -h`` did not
    show --target, --no-wait, --power-on."""
    runner = CliRunner()
    direct = runner.invoke(main, ["restore", "some-item", "-h"], prog_name="opencsbs")
    assert direct.exit_code == 0 and direct.output.startswith(
        "Usage: opencsbs restore [OPTIONS] CHECKPOINT_ITEM_ID\n")
    bogus = runner.invoke(main, ["backup", "some-server", "--bogus"], prog_name="opencsbs")
    assert bogus.exit_code == 2 and bogus.output.startswith("Usage: opencsbs backup [OPTIONS] SERVER_ID\n")
    assert "Try 'opencsbs backup -h' for help." in bogus.output or "Try 'opencsbs backup --help'" in bogus.output
    group = runner.invoke(main, ["restore", "-h"], prog_name="opencsbs")
    assert group.exit_code == 0
    assert group.output.startswith("Usage: opencsbs restore [OPTIONS] CHECKPOINT_ITEM_ID\n"
                                   "   or: opencsbs restore COMMAND [ARGS]...\n")
    for words in ("--target", "--power-on / --no-power-on", "--wait / --no-wait", "cancel", "list", "show"):
        assert words in group.output, words
    assert " now " not in group.output and "restore now" not in group.output
    backup_help = runner.invoke(main, ["backup", "-h"], prog_name="opencsbs").output
    assert backup_help.startswith("Usage: opencsbs backup [OPTIONS] SERVER_ID\n")
    assert "--wait" in backup_help and "--full" in backup_help and "delete" in backup_help
