"""The command line as a client of a real ``opencsbs serve`` process: ``--url``/``--token`` (or
``OPENCSBS_URL``/``OPENCSBS_TOKEN``) make ``backup list|show``, ``check`` and ``policy list|show`` ask the API over
HTTP, with the same tables and the API's JSON; refusals and an unreachable service are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from opencsbs.cli import main

from conftest import EXAMPLE_INVENTORY, free_port

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
DB_1 = "1d4b4e0e-5d1f-4c4b-8d57-2f5a3a1b0002"

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path, database_url):
    """``(url, token, local)``: a running ``opencsbs serve`` on a sandbox, a demo member token, and
    ``local(*args)`` running the CLI on the service's own data."""
    data = tmp_path / "served"
    runner = CliRunner()
    state = ["--data-dir", str(data), "--database-url", database_url]

    def local(*args):
        result = runner.invoke(main, [*state, *args], prog_name="opencsbs")
        assert result.exit_code == 0, result.output
        return result

    local("sandbox", "load", str(EXAMPLE_INVENTORY))
    token = local("token", "create", "--project", "demo").stdout.strip().splitlines()[-1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "opencsbs", *state, "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            if httpx.get(f"{url}/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    try:
        yield url, token, local
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
