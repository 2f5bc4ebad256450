"""The ``opencsbs`` command: sandbox load|list|set|delete|write|hash and token create, through click's CliRunner
and as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from opencsbs.cli import main

from conftest import EXAMPLE_INVENTORY

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB_1_DATA = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a02"
GIB = 1024**3


@pytest.fixture
def cli(tmp_path, database_url):
    """``cli(*args, input=None) -> Result`` on a private data dir and the test's database."""
    runner = CliRunner()
    data = tmp_path / "cli-data"

    def run(*args, input=None, ok=True):
        result = runner.invoke(main, ["--data-dir", str(data), "--database-url", database_url, *args], input=input)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    run.data_dir = data
    return run


def test_sandbox_commands_end_to_end(cli, tmp_path):
    assert "loaded 12 servers, 14 volumes" in cli("sandbox", "load", str(EXAMPLE_INVENTORY)).output
    listing = cli("sandbox", "list", "--project", "demo").output
    assert WEB_1 in listing and "web-1" in listing and "/dev/vda" in listing and "boot" in listing
    assert "c3d4e5f6" not in listing
    servers = json.loads(cli("sandbox", "list", "--json").output)
    assert len(servers) == 12
    web = next(s for s in servers if s["id"] == WEB_1)
    assert web["status"] == "ACTIVE" and len(web["volumes"]) == 2

    cli("sandbox", "set", WEB_1, "--status", "shutoff", "--task-state", "image_snapshot", "--az", "az2")
    web = next(s for s in json.loads(cli("sandbox", "list", "--json").output) if s["id"] == WEB_1)
    assert (web["status"], web["task_state"], web["availability_zone"]) == ("SHUTOFF", "image_snapshot", "az2")
    cli("sandbox", "set", WEB_1, "--task-state", "")
    web = next(s for s in json.loads(cli("sandbox", "list", "--json").output) if s["id"] == WEB_1)
    assert web["task_state"] is None

    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"hello volume" * 1000)
    assert "wrote 12000 bytes" in cli("sandbox", "write", WEB_1_DATA, "--offset", "512", "--from", str(payload)).output
    assert "wrote 5 bytes" in cli("sandbox", "write", WEB_1_DATA, "--offset", "0", input=b"stdin").output
    digest = cli("sandbox", "hash", WEB_1_DATA).output.strip().splitlines()[-1]
    img = cli.data_dir / "sandbox" / "volumes" / f"{WEB_1_DATA}.img"
    assert digest == hashlib.sha256(img.read_bytes()).hexdigest()
    with open(img, "rb") as fh:
        assert fh.read(5) == b"stdin"
        fh.seek(512)
        assert fh.read(12) == b"hello volume"

    assert f"server {WEB_1} deleted" in cli("sandbox", "delete", WEB_1).output
    assert WEB_1 not in cli("sandbox", "list").output
    assert f"volume {WEB_1_DATA} deleted" in cli("sandbox", "delete", WEB_1_DATA).output
    assert not img.exists()


@pytest.mark.parametrize("args, words", [
    (["sandbox", "set", "nope", "--status", "ACTIVE"], "no sandbox server nope"),
    (["sandbox", "delete", "nope"], "no sandbox server or volume nope"),
    (["sandbox", "hash", "nope"], "no sandbox volume nope"),
    (["sandbox", "write", "nope", "--offset", "0"], "no sandbox volume nope"),
    (["sandbox", "write", WEB_1_DATA, "--offset", str(GIB - 1)], "past its end"),
    (["sandbox", "load", "/does/not/exist.yaml"], "does not exist"),
    (["token", "create", "--project", "demo", "--role", "root"], "root"),
    (["token", "create", "--project", " "], "project id must not be empty"),
    (["token", "create", "--project", "p" * 65], "project id must be at most 64 characters"),
    (["token", "create", "--project", "demo", "--user", "u" * 65], "user id must be at most 64 characters"),
    (["token", "create"], "--project is required (or --cloud-admin"),
    (["token", "create", "--cloud-admin", "--project", "demo"], "not scoped to a project"),
])
def test_errors_exit_non_zero_with_a_message(cli, args, words):
    cli("sandbox", "load", str(EXAMPLE_INVENTORY))
    result = cli(*args, input=b"xx", ok=False)
    assert result.exit_code != 0
    assert words in result.output


def test_invalid_inventory_file_exits_non_zero(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("projects:\n  p:\n    servers:\n      - {id: s, colour: red}\n")
    result = cli("sandbox", "load", str(bad), ok=False)
    assert result.exit_code == 1 and "colour" in result.output


def test_token_create_prints_the_token_last_and_stores_only_its_hash(tmp_path):
    data = tmp_path / "tok"
    result = CliRunner().invoke(main, ["token", "create", "--project", "demo", "--role", "reader",
                                       "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert len(token) >= 40 and " " not in token
    stored = b"".join(p.read_bytes() for p in data.iterdir() if p.name.startswith("opencsbs.db"))
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored

    from opencsbs.auth.local import LocalAuthenticator
    from opencsbs.config import Settings
    from opencsbs.bootstrap import build_runtime

    rt = build_runtime(Settings(data_dir=data))
    try:
        principal = LocalAuthenticator(rt.sessions).authenticate(token)
    finally:
        rt.close()
    assert principal.project_id == "demo" and principal.roles == frozenset({"reader"})


# --- a real process -----------------------------------------------------------------------------------------


def run_cli(*args, data_dir, input=None, env=None):
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "opencsbs", "--data-dir", str(data_dir), *args],
                          input=input, capture_output=True, timeout=120, env=child_env)


def test_cli_as_a_subprocess(tmp_path):
    data = tmp_path / "proc"
    r = run_cli("token", "create", "--project", "demo", "--role", "admin", data_dir=data)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.decode().strip().splitlines()) == 1, "stdout holds only the token"
    r = run_cli("sandbox", "load", str(EXAMPLE_INVENTORY), data_dir=data)
    assert r.returncode == 0 and b"loaded 12 servers, 14 volumes" in r.stdout, r.stderr
    r = run_cli("sandbox", "set", WEB_1, "--status", "ERROR", data_dir=data)
    assert r.returncode == 0, r.stderr
    r = run_cli("sandbox", "write", WEB_1_DATA, "--offset", "1048576", input=b"\x01" * 4096, data_dir=data)
    assert r.returncode == 0 and b"wrote 4096 bytes" in r.stdout, r.stderr
    r = run_cli("sandbox", "hash", WEB_1_DATA, data_dir=data)
    img = data / "sandbox" / "volumes" / f"{WEB_1_DATA}.img"
    assert r.stdout.decode().strip() == hashlib.sha256(img.read_bytes()).hexdigest()
    r = run_cli("sandbox", "list", "--json", data_dir=data)
    web = next(s for s in json.loads(r.stdout) if s["id"] == WEB_1)
    assert web["status"] == "ERROR"
    r = run_cli("sandbox", "delete", "nope", data_dir=data)
    assert r.returncode == 1 and b"no sandbox server or volume nope" in r.stderr
    r = run_cli("db", "upgrade", data_dir=data)
    assert r.returncode == 0 and b"newest schema" in r.stdout


def test_sandbox_set_accepts_only_nova_vocabulary(cli):
    cli("sandbox", "load", str(EXAMPLE_INVENTORY))
    before = next(s for s in json.loads(cli("sandbox", "list", "--json").output) if s["id"] == WEB_1)
    for args, option in ((("--status", "RUNNING"), "--status"), (("--status", "active!"), "--status"),
                         (("--task-state", "making_coffee"), "--task-state")):
        r = cli("sandbox", "set", WEB_1, *args, ok=False)
        assert r.exit_code == 2, r.output
        assert f"Invalid value for '{option}'" in r.output
        assert ("shutoff" if option == "--status" else "resize_migrating") in r.output.lower()
    after = next(s for s in json.loads(cli("sandbox", "list", "--json").output) if s["id"] == WEB_1)
    assert after == before  # nothing changed
    cli("sandbox", "set", WEB_1, "--status", "Verify_Resize", "--task-state", "RESIZE_FINISH")
    web = next(s for s in json.loads(cli("sandbox", "list", "--json").output) if s["id"] == WEB_1)
    assert (web["status"], web["task_state"]) == ("VERIFY_RESIZE", "resize_finish")


def _leaf_commands(group, path=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_subcommand_takes_the_state_options_after_it():
    """docs/configuration.md: ``--data-dir``, ``--config`` and ``--database-url`` are accepted before the subcommand
    and by every subcommand."""
    missing = []
    for path, command in _leaf_commands(main):
        flags = {flag for param in command.params for flag in getattr(param, "opts", ())}
        missing += [f"{' '.join(path)} {flag}" for flag in ("--data-dir", "--config", "--database-url")
                    if flag not in flags]
    assert not missing, missing


def test_state_options_after_the_subcommand_choose_the_data(tmp_path, database_url):
    runner = CliRunner()
    data = tmp_path / "after"
    state = ["--data-dir", str(data), "--database-url", database_url]
    loaded = runner.invoke(main, ["sandbox", "load", str(EXAMPLE_INVENTORY), *state])
    assert loaded.exit_code == 0, loaded.output
    created = runner.invoke(main, ["policy", "create", "--project", "demo", "--name", "after", *state])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["policy", "list", "--json", "--project", "demo", *state])
    assert listed.exit_code == 0, listed.output
    assert [p["name"] for p in json.loads(listed.output)] == ["after"]
    item = runner.invoke(main, ["backup", WEB_1, "--wait", *state])
    assert item.exit_code == 0, item.output
    restored = runner.invoke(main, ["restore", item.output.strip().splitlines()[-1], *state])
    assert restored.exit_code == 0, restored.output


def test_backup_command_backs_up_a_bare_metal_server(cli):
    """``opencsbs backup`` of bms-1 (OS::Ironic::BareMetalServer, protectable) used to answer CSBS.6000 because it
    always asked for an OS::Nova::Server."""
    bms_1 = "9cfaad9b-df7b-42e5-8bc8-adacbcbd0010"
    cli("sandbox", "load", str(EXAMPLE_INVENTORY))
    result = cli("backup", bms_1, "--wait", ok=False)
    assert result.exit_code == 0, result.output
    assert "available" in result.output


def test_token_create_cloud_admin_and_the_upgrade_notice(cli, settings):
    """``--cloud-admin`` makes a system-scoped admin token; the one-line notice of ``opencsbs serve`` names it while
    only project admin tokens exist, and is gone once a cloud admin or an admin project is configured."""
    from opencsbs.auth.admin_scope import cross_project_notice
    from opencsbs.bootstrap import build_runtime

    cli("token", "create", "--project", "demo", "--role", "admin")
    settings.data_dir = cli.data_dir
    rt = build_runtime(settings, migrate=False)
    try:
        notice = cross_project_notice(rt.settings, rt.sessions, rt.enforcer)
        assert notice and "--cloud-admin" in notice and "\n" not in notice
        result = cli("token", "create", "--cloud-admin")
        assert "cloud-admin token (every project)" in result.output
        token = result.output.strip().splitlines()[-1]
        p = rt.authenticator.authenticate(token)
        assert p.system_scope == "all" and p.project_id == "" and rt.enforcer.may_act_on(p, "anyone")
        assert cross_project_notice(rt.settings, rt.sessions, rt.enforcer) is None
    finally:
        rt.close()
    settings.auth.mode = "keystone"
    assert "system-scoped" in cross_project_notice(settings, None, rt.enforcer)
    settings.auth.admin_project_name = "admin"
    assert cross_project_notice(settings, None, rt.enforcer) is None


def test_backup_of_an_unknown_server_says_it_is_not_found_and_where_backups_are_listed(cli):
    """``opencsbs backup list`` used to answer "no server list", which reads as "there is no server list"; it now
    lists backups, and a typo is a server that is not found, with the way to list backups."""
    cli("sandbox", "load", str(EXAMPLE_INVENTORY))
    result = cli("backup", "lsit", ok=False)
    assert result.exit_code == 1
    assert "server 'lsit' not found" in result.output
    assert "opencsbs backup list" in result.output


def test_restore_of_a_backup_whose_server_is_gone_suggests_a_target(cli):
    cli("sandbox", "load", str(EXAMPLE_INVENTORY))
    item = cli("backup", WEB_1, "--wait").output.strip().splitlines()[-1]
    cli("sandbox", "delete", WEB_1)
    result = cli("restore", item, ok=False)
    assert result.exit_code == 1
    assert f"server '{WEB_1}' not found" in result.output and "--target" in result.output


def test_token_create_says_which_database_holds_the_token(tmp_path):
    """Without ``--data-dir`` the token lands in the default data dir's database: the note must say where, or the
    API of another data dir answers only "token is not valid"."""
    data = tmp_path / "tok"
    result = CliRunner().invoke(main, ["token", "create", "--project", "demo", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert f"stored in {data / 'opencsbs.db'}" in result.stderr
    assert str(data) not in result.stdout
