"""The command line as a client of a real ``opencsbs serve`` process: ``--url``/``--token`` (or
``OPENCSBS_URL``/``OPENCSBS_TOKEN``) make ``backup list|show``, ``check`` and ``policy list|show`` ask the API over
HTTP, with the same tables and the API's JSON; refusals and an unreachable service are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import click
import httpx
import pytest
from click.testing import CliRunner

from opencsbs.cli import main

from conftest import EXAMPLE_INVENTORY, free_port
from test_cli_errors import closed_pipe_run

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
DB_1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"

pytestmark = pytest.mark.slow


def start_serve(tmp_path, state: list[str], env_extra: dict[str, str] | None = None):
    """A running ``opencsbs serve`` on a free port with ``state`` (``--data-dir``, ``--database-url``) and the
    ``OPENCSBS_*`` variables of ``env_extra`` only: ``(url, stop)``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCSBS_", "OS_"))}
    env.update(env_extra or {})
    log_path = tmp_path / f"serve-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "opencsbs", *state, "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log_path.read_text()
        try:
            if httpx.get(f"{url}/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)

    def stop():
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    return url, stop


@pytest.fixture
def served(tmp_path, database_url):
    """``(url, token, local)``: a running ``opencsbs serve`` on a sandbox, a demo member token, and
    ``local(*args)`` running the CLI on the service's own data."""
    data = tmp_path / "served"
    runner = CliRunner()
    state = ["--data-dir", str(data), "--database-url", database_url]

    def local(*args, input=None):
        result = runner.invoke(main, [*state, *args], prog_name="opencsbs", input=input)
        assert result.exit_code == 0, result.output
        return result

    local("sandbox", "load", str(EXAMPLE_INVENTORY))
    token = local("token", "create", "--project", "demo").stdout.strip().splitlines()[-1]
    url, stop = start_serve(tmp_path, state)
    try:
        yield url, token, local
    finally:
        stop()


def remote(url, token, *args, env=None):
    """The CLI with ``--url``/``--token`` and a data dir and database that do not exist: nothing local is used."""
    return CliRunner(env=env).invoke(main, ["--database-url", "postgresql://nobody@127.0.0.1:1/none",
                                            *(["--url", url, "--token", token] if token else []), *args],
                                     prog_name="opencsbs")


def test_list_show_and_check_through_the_api(served):
    url, token, local = served
    item = local("backup", WEB_1, "--wait").stdout.strip().splitlines()[-1]
    pid = local("policy", "create", "--project", "demo", "--name", "nightly", "--server", DB_1, "-f", "value",
                "-c", "id").stdout.strip()

    listed = remote(url, token, "backup", "list", "--project", "demo")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split()[:4] == ["ID", "NAME", "SERVER", "STATUS"]
    assert item in listed.stdout and "web-1" in listed.stdout and "available" in listed.stdout
    as_json = json.loads(remote(url, token, "backup", "list", "--project", "demo", "--json").stdout)
    assert [b["id"] for b in as_json] == [item]
    shown = remote(url, token, "backup", "show", item, "--project", "demo")
    assert shown.exit_code == 0 and "web-1-sys" in shown.stdout and "available" in shown.stdout

    checked = remote(url, token, "check", WEB_1, DB_1, "--project", "demo", "--json")
    assert checked.exit_code == 0, checked.output
    verdicts = {v["resource_id"]: v for v in json.loads(checked.stdout)}
    assert verdicts[WEB_1]["result"] is True and verdicts[DB_1]["error_code"] == "CSBS.6004"
    # NAME as local mode shows it: the project's server list fills what check_protectable does not answer
    assert {sid: v["name"] for sid, v in verdicts.items()} == {WEB_1: "web-1", DB_1: "db-1"}
    table = remote(url, token, "check", WEB_1, DB_1, "nope", "--project", "demo")
    assert table.exit_code == 1, table.output
    rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}
    assert rows == {WEB_1: "web-1", DB_1: "db-1", "nope": "-"}
    assert remote(url, token, "check", WEB_1, DB_1, "--project", "demo", "-f", "value", "-c", "name").stdout.split() \
        == ["web-1", "db-1"]

    policies = remote(url, token, "policy", "list", "--project", "demo", "-f", "value", "-c", "id", "-c", "name")
    assert policies.stdout.split() == [pid, "nightly"]
    assert "nightly" in remote(url, token, "policy", "show", pid, "--project", "demo").stdout

    # the same from the environment
    env = {"OPENCSBS_URL": url, "OPENCSBS_TOKEN": token}
    by_env = remote(url, None, "backup", "list", "--project", "demo", "-f", "value", "-c", "id", env=env)
    assert by_env.stdout.split() == [item]


def test_refusals_and_an_unreachable_service_are_one_line(served):
    url, token, _local = served
    bad = remote(url, "not-a-token", "backup", "list", "--project", "demo")
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and len(bad.output.strip().splitlines()) == 1
    missing = remote(url, token, "backup", "show", "nope", "--project", "demo")
    assert missing.exit_code == 1 and "CSBS.3001" in missing.output
    other = remote(url, token, "backup", "list", "--project", "someone-else")
    assert other.exit_code == 1 and "Error: " in other.output
    gone = remote(f"http://127.0.0.1:{free_port()}", token, "backup", "list", "--project", "demo")
    assert gone.exit_code == 1 and "cannot reach opencsbs at http://127.0.0.1:" in gone.output
    no_project = remote(url, token, "backup", "list")
    assert no_project.exit_code == 2 and "--project is required with --url" in no_project.output



WEB_1_SYS = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01"


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_backup_restore_and_delete_through_the_api(served):
    url, token, local = served
    local("sandbox", "write", WEB_1_SYS, "--offset", "8192", input=b"first version " * 500)
    before = local("sandbox", "hash", WEB_1_SYS).stdout.strip()

    made = ok(remote(url, token, "backup", WEB_1, "--project", "demo", "--wait"))
    item = made.stdout.strip().splitlines()[-1]
    assert "available" in made.stderr and f"checkpoint_item {item}" in made.stderr
    assert "available" in ok(remote(url, token, "backup", "show", item, "--project", "demo")).stdout

    local("sandbox", "write", WEB_1_SYS, "--offset", "8192", input=b"spoilt! " * 900)
    assert local("sandbox", "hash", WEB_1_SYS).stdout.strip() != before
    restored = ok(remote(url, token, "restore", item, "--project", "demo"))
    restore_id = restored.stdout.strip().splitlines()[-1]
    assert local("sandbox", "hash", WEB_1_SYS).stdout.strip() == before
    shown = ok(remote(url, token, "restore", "show", restore_id, "--project", "demo", "-f", "value", "-c", "status",
                      "-c", "backup", "-c", "target"))
    assert shown.stdout.split() == ["success", item, WEB_1]

    # restore list has no API: refused in one line with exit 2, nothing local is opened
    listed = remote(url, token, "restore", "list", "--project", "demo")
    assert listed.exit_code == 2 and "no API" in listed.output

    # a legal hold (a project admin's act) keeps the backup: the delete is refused; released, it goes through
    admin = local("token", "create", "--project", "demo", "--role", "admin").stdout.strip().splitlines()[-1]
    hold = json.loads(ok(remote(url, admin, "holds", "create", "--project", "demo", "--name", "audit",
                                "--backup", item)).stdout)
    assert hold["status"] == "active" and hold["checkpoint_item_ids"] == [item]
    kept = remote(url, token, "backup", "delete", item, "--project", "demo")
    assert kept.exit_code == 1 and kept.output.startswith("Error: CSBS.") and len(kept.output.splitlines()) == 1
    check = json.loads(ok(remote(url, token, "locks", "check", item, "--project", "demo")).stdout)
    assert check["deletable"] is False and check["reason"] == "legal_hold" and check["hold_id"] == hold["id"]
    ok(remote(url, admin, "holds", "release", hold["id"], "--project", "demo"))
    assert "deleting" in ok(remote(url, token, "backup", "delete", item, "--project", "demo")).stdout
    deadline = time.monotonic() + 60
    while (status := json.loads(remote(url, token, "backup", "list", "--project", "demo", "--status", "deleted",
                                       "--json").stdout)) == [] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert [b["id"] for b in status] == [item]


def test_policies_locks_and_verify_through_the_api(served):
    url, token, local = served
    admin = local("token", "create", "--project", "demo", "--role", "admin").stdout.strip().splitlines()[-1]
    created = json.loads(ok(remote(url, token, "policy", "create", "--project", "demo", "--name", "nightly",
                                   "--server", WEB_1, "--max-backups", "3", "--json")).stdout)
    pid = created["id"]
    assert created["scheduled_operations"][0]["enabled"] is True
    updated = ok(remote(url, token, "policy", "update", pid, "--project", "demo", "--disable", "--name", "nights",
                        "-f", "value", "-c", "name", "-c", "scheduling"))
    assert updated.stdout.split() == ["nights", "disabled"]
    run = json.loads(ok(remote(url, token, "policy", "run", pid, "--project", "demo", "--json")).stdout)
    assert run["protection_plan"]["id"] == pid
    # the API's refusal, in one line (a second run while the first one goes is CSBS.1001, but the first one's tiny
    # backup may already be over: that rule is tested on the API, tests/test_policy_runs.py)
    unknown = remote(url, token, "policy", "run", "00000000-0000-4000-8000-000000000000", "--project", "demo")
    assert unknown.exit_code == 1 and "CSBS.3000" in unknown.output
    duplicate = remote(url, token, "policy", "create", "--project", "demo", "--name", "nights")
    assert duplicate.exit_code == 1 and "CSBS.9007" in duplicate.output

    lock = json.loads(ok(remote(url, admin, "locks", "create", "--project", "demo", "--mode", "governance",
                                "--min-days", "2", "--policy", pid)).stdout)
    assert lock["policy_id"] == pid and lock["min_retention_days"] == 2
    assert [lk["id"] for lk in json.loads(ok(remote(url, token, "locks", "list", "--project", "demo")).stdout)] \
        == [lock["id"]]
    weaker = remote(url, admin, "locks", "update", lock["id"], "--project", "demo", "--min-days", "1")
    assert weaker.exit_code == 1 and "Error: CSBS." in weaker.output

    deadline = time.monotonic() + 60
    while json.loads(remote(url, token, "backup", "list", "--project", "demo", "--json").stdout)[0]["status"] \
            == "protecting" and time.monotonic() < deadline:
        time.sleep(0.3)
    verified = ok(remote(url, token, "verify", "run", "--project", "demo", "--policy", pid, "--wait"))
    assert json.loads(verified.stdout)["status"] == "ok"
    runs = json.loads(ok(remote(url, token, "verify", "list", "--project", "demo")).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "ok"
    assert "deleted" in ok(remote(url, token, "policy", "delete", pid, "--project", "demo")).stdout
    assert remote(url, token, "policy", "show", pid, "--project", "demo").exit_code == 1


def _minimal_args(command) -> list[str]:
    """Arguments that get ``command`` past click's parsing: a value for each required argument and option (an
    existing file where a path must exist, the first choice of a choice)."""
    import click

    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        if isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        elif isinstance(param.type, click.Path):
            value = str(EXAMPLE_INVENTORY)
        elif isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
            value = "1"
        else:
            value = "x"
        args += [param.opts[0], value] if isinstance(param, click.Option) else [value]
    return args


def _local_only_commands() -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of every command of ``remote.LOCAL_ONLY`` (a group: each command in it)."""
    import click

    from opencsbs.cli.remote import LOCAL_ONLY

    out = []

    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            out.append((" ".join(path), [*path, *_minimal_args(command)]))

    for entry in LOCAL_ONLY:
        command = main
        for name in entry.split():
            command = command.commands[name]
        walk(command, entry.split())
    return out


@pytest.mark.parametrize("name, argv", _local_only_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_commands_without_an_api_refuse_client_mode(tmp_path, name, argv):
    """``opencsbs --url ... --token T bank verify`` (or with OPENCSBS_URL/OPENCSBS_TOKEN) exited 0 and created a
    local data dir and database: every command without an API refuses client mode in one line, exit 2."""
    data = tmp_path / "data"
    for prefix, env in ((["--url", "http://127.0.0.1:8911", "--token", "T"], {}),
                        ([], {"OPENCSBS_URL": "http://127.0.0.1:8911", "OPENCSBS_TOKEN": "T"})):
        args = ["--data-dir", str(data), *prefix, *argv]
        if name in ("serve", "worker", "scheduler"):  # a process, so that running instead of refusing fails, not hangs
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCSBS_", "OS_"))}
            done = subprocess.run([sys.executable, "-m", "opencsbs", *args], capture_output=True, text=True,
                                  timeout=60, env={**clean, **env})
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        else:
            result = CliRunner(env=env).invoke(main, args, prog_name="opencsbs")
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        assert code == 2, (argv, stdout, stderr)
        assert stderr == (f"Error: {name} has no API: it works on the service's own database and bank only; run it "
                          "on the service's machine without --url/--os-cloud (OPENCSBS_URL, OS_CLOUD)\n")
        assert stdout == "" and not data.exists()


def test_docs_list_the_commands_without_an_api():
    """docs/cli.md's list of the commands that refuse client mode is the code's (``remote.LOCAL_ONLY``)."""
    import re
    from pathlib import Path

    from opencsbs.cli.remote import LOCAL_ONLY

    text = " ".join((Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text().split())
    listed = re.search(r"Commands without an API \((.*?)\) refuse client mode", text).group(1)
    names = set()
    for item in re.findall(r"`([^`]+)`", listed):
        words = item.removesuffix(" ...").split()
        names.update(" ".join([*words[:-1], last]) for last in words[-1].split("|"))
    assert names == set(LOCAL_ONLY)


def test_check_and_backup_show_through_the_api_say_what_local_mode_says(served):
    """In client mode ``check nope`` exited 0 and ``backup show`` read ``project -``; a closed stdout printed
    ``Error: BrokenPipeError``."""
    url, token, local = served
    item = ok(remote(url, token, "backup", WEB_1, "--project", "demo", "--wait")).stdout.strip().splitlines()[-1]

    checked = remote(url, token, "check", WEB_1, "nope", "--project", "demo", "-f", "value", "-c", "server", "-c",
                     "protectable")
    assert checked.exit_code == 1
    assert checked.stdout.splitlines() == [f"{WEB_1} yes", "nope no"]
    assert checked.stderr == "Error: no such server: nope\n"
    assert ok(remote(url, token, "check", WEB_1, "--project", "demo")).stderr == ""

    shown = ok(remote(url, token, "backup", "show", item, "--project", "demo", "-f", "value", "-c", "project"))
    assert shown.stdout == "demo\n"

    env = {"OPENCSBS_URL": url, "OPENCSBS_TOKEN": token}
    for args in (["backup", "list", "--project", "demo", "-f", "value", "-c", "id"],
                 ["backup", "list", "--project", "demo"]):
        result = closed_pipe_run(*args, env=env)
        assert (result.returncode, result.stderr) == (0, ""), (args, result.stderr)


def _mocked_remote(monkeypatch, handler):
    """``httpx.Client`` answering through ``handler(request) -> httpx.Response`` (no service), and the requests
    it saw."""
    seen: list[httpx.Request] = []
    real = httpx.Client

    def handle(request):
        seen.append(request)
        return handler(request)

    monkeypatch.setattr(httpx, "Client", lambda **kw: real(**kw, transport=httpx.MockTransport(handle)))
    return seen


def test_server_names_page_through_the_server_list_and_stop_when_all_are_found(monkeypatch):
    from opencsbs.cli.remote import Remote

    servers = [{"id": f"s{i}", "name": f"vm-{i}"} for i in range(5)]

    def handler(request):
        marker, limit = request.url.params.get("marker"), int(request.url.params["limit"])
        start = 0 if marker is None else [s["id"] for s in servers].index(marker) + 1
        return httpx.Response(200, json={"servers": servers[start:start + limit]})

    seen = _mocked_remote(monkeypatch, handler)
    with Remote("http://csbs.test", "t", "demo") as api:
        assert api.server_names(["s1", "s3"], page_size=2) == {"s1": "vm-1", "s3": "vm-3"}
        assert [(r.url.path, r.url.params.get("marker")) for r in seen] == [
            ("/opencsbs/v1/demo/servers", None), ("/opencsbs/v1/demo/servers", "s1")]
        seen.clear()
        assert api.server_names(["s4", "gone"], page_size=2) == {"s4": "vm-4"}
        assert len(seen) == 3  # the list's three pages, the last one short


def test_server_volumes_finds_a_server_on_a_later_page(monkeypatch):
    """``restore --target`` reads the target's volumes from every page of the server list, not the first only."""
    from opencsbs.cli.remote import Remote

    servers = [{"id": f"s{i}", "name": f"vm-{i}", "volumes": [{"id": f"v{i}b", "device": "/dev/vdb"},
                                                             {"id": f"v{i}a", "device": "/dev/vda"}]}
               for i in range(5)]

    def handler(request):
        marker, limit = request.url.params.get("marker"), int(request.url.params["limit"])
        start = 0 if marker is None else [s["id"] for s in servers].index(marker) + 1
        return httpx.Response(200, json={"servers": servers[start:start + limit]})

    _mocked_remote(monkeypatch, handler)
    monkeypatch.setattr("opencsbs.cli.remote.NAMES_PAGE", 2)
    with Remote("http://csbs.test", "t", "demo") as api:
        assert api.server_volumes("s4") == ["v4a", "v4b"]
        with pytest.raises(click.ClickException, match="server 'gone' not found in project demo"):
            api.server_volumes("gone")


def _unreachable():
    raise httpx.ConnectError("refused")


@pytest.mark.parametrize("failure", [
    lambda: httpx.Response(403, json={"error_code": "APIGW.0302", "error_msg": "forbidden"}),
    lambda: httpx.Response(404, text="not found"),
    lambda: httpx.Response(200, json={"unexpected": True}),
    _unreachable,
], ids=["refused", "no-route", "not-a-list", "unreachable"])
def test_check_keeps_a_dash_when_the_names_cannot_be_had(monkeypatch, failure):
    from opencsbs.cli.remote import DEFAULT_PROVIDER

    def handler(request):
        if request.url.path == "/v1/demo/providers":
            return httpx.Response(200, json={"providers": [{"id": DEFAULT_PROVIDER}]})
        if request.url.path == f"/v1/demo/providers/{DEFAULT_PROVIDER}/resources/action":
            return httpx.Response(200, json={"protectable": [
                {"resource_id": WEB_1, "resource_type": "OS::Nova::Server", "result": True}]})
        return failure()

    seen = _mocked_remote(monkeypatch, handler)
    checked = remote("http://csbs.test", "t", "check", WEB_1, "--project", "demo", "-f", "value", "-c", "server",
                     "-c", "name", "-c", "protectable")
    assert checked.exit_code == 0, checked.output
    assert checked.stdout == f"{WEB_1} - yes\n"
    assert [r.url.path for r in seen][-1] == "/opencsbs/v1/demo/servers"
