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
