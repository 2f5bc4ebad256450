"""Nothing lost, nothing half-done: cancelling backups and restores (API and CLI), a restore that checks its
chunks before it touches the server, and the CLI's ``--wait`` running only its own job and warning when no
worker runs (docs/engine.md "Cancelling a job", docs/cli.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from conftest import EXAMPLE_INVENTORY
from engine_helpers import DB1, MIB, WEB1, WEB1_DATA, WEB1_SYS, item_of, protect, random_bytes, restore, write
from opencsbs.cli import main
from opencsbs.clouds.sandbox.models import SandboxServer
from opencsbs.db.models import Job, ResourceLock, Restore
from opencsbs.engine import backup as backup_engine
from opencsbs.engine import restore as restore_engine
from opencsbs.engine.jobs import claim_next
from opencsbs.engine.worker import Worker, drain, mark_seen


def _locks(runtime) -> list:
    with runtime.sessions() as session:
        return session.scalars(select(ResourceLock)).all()


def _server_status(runtime, server_id: str) -> str:
    with runtime.sessions() as session:
        return session.get(SandboxServer, server_id).status


def test_a_running_backup_cancelled_through_the_api_ends_error_and_leaves_nothing(demo, runtime):
    client, headers = demo
    write(runtime, WEB1_SYS, 0, random_bytes(12 * MIB, 1))
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    item_id = item_of(client, headers, cp["id"])["id"]
    job = claim_next(runtime.sessions, "worker-a", lease_seconds=30)
    backup_engine.STEPS["start"](runtime, job)  # the snapshot is taken; the copy is next
    assert any(runtime.driver.snapshots_dir.iterdir())

    r = client.post(f"/opencsbs/v1/demo/checkpoint_items/{item_id}/cancel", headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["cancel"]["cancel_requested"] == "cancelled by local-member"
    Worker(runtime, "worker-a")._run(job)  # the worker sees the request at a progress write and stops

    item = item_of(client, headers, cp["id"])
    assert item["status"] == "error"
    assert item["extend_info"]["fail_reason"] == "cancelled by local-member"
    assert item["extend_info"]["fail_op"] == "backup"
    assert runtime.bank.list_indexes("checkpoints/") == []
    assert not any(runtime.driver.snapshots_dir.iterdir())
    assert _locks(runtime) == []
    with runtime.sessions() as session:
        assert session.get(Job, job.id).status == "failed"

    again = client.post(f"/opencsbs/v1/demo/checkpoint_items/{item_id}/cancel", headers=headers)
    assert again.status_code == 409
    assert again.json() == {"error_code": "CSBS.8301", "error_msg": f"Backup ({item_id}) has already ended "
                                                                   "(status error): nothing to cancel."}
    unknown = client.post("/opencsbs/v1/demo/checkpoint_items/nope/cancel", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "CSBS.3001"
    unknown = client.post("/opencsbs/v1/demo/restores/nope/cancel", headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "CSBS.6040"
    assert protect(client, headers, WEB1).status_code == 200  # the server is free again


def test_cancel_needs_the_write_rule_and_is_in_the_openapi_document(demo, make_token):
    client, headers = demo
    reader = {"X-Auth-Token": make_token("demo", "reader")}
    r = client.post("/opencsbs/v1/demo/restores/x/cancel", headers=reader)
    assert r.status_code == 403 and "csbs:jobs:write" in r.json()["error_msg"]
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/cancel"]
    assert "post" in paths["/opencsbs/v1/{project_id}/restores/{restore_id}/cancel"]


def test_a_cancelled_restore_stops_before_its_next_chunk_and_says_per_disk_what_it_wrote(demo, runtime):
    client, headers = demo
    write(runtime, WEB1_SYS, 0, random_bytes(24 * MIB, 2))
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    drain(runtime)
    item = item_of(client, headers, cp["id"])
    rs = restore(client, headers, item, WEB1, power_on=True).json()["restore"]
    job = claim_next(runtime.sessions, "worker-a", lease_seconds=30)
    restore_engine.STEPS["start"](runtime, job)  # every chunk checked
    restore_engine.STEPS["power_off"](runtime, job)
    assert _server_status(runtime, WEB1) == "SHUTOFF"
    r = client.post(f"/opencsbs/v1/demo/restores/{rs['id']}/cancel", headers=headers)
    assert r.status_code == 202, r.text
    Worker(runtime, "worker-a")._run(job)

    shown = client.get(f"/v1/demo/restores/{rs['id']}", headers=headers).json()["restore"]
    assert shown["status"] == "error"
    with runtime.sessions() as session:
        reason = session.get(Restore, rs["id"]).resources_reason[WEB1]
    first, second = (vb["source_volume_id"] for vb in item["extend_info"]["volume_backups"])
    assert reason.startswith("cancelled by local-member; disk ")
    assert f"disk {first}: " in reason and " MiB of " in reason and f"disk {second}: not written" in reason
    assert reason.endswith("server powered on as asked")
    assert _server_status(runtime, WEB1) == "ACTIVE"  # what the user asked for
    assert _locks(runtime) == []


def _cli(tmp_path, database_url):
    runner = CliRunner()
    data = tmp_path / "cli-data"

    def run(*args):
        return runner.invoke(main, ["--data-dir", str(data), "--database-url", database_url, *args])

    run.data_dir = data
    return run


def test_a_restore_from_a_damaged_backup_touches_nothing_and_says_so_in_one_line(tmp_path, database_url):
    cli = _cli(tmp_path, database_url)
    assert cli("sandbox", "load", str(EXAMPLE_INVENTORY)).exit_code == 0
    payload = tmp_path / "data.bin"
    payload.write_bytes(random_bytes(16 * MIB, 3))
    assert cli("sandbox", "write", WEB1_SYS, "--offset", "0", "--from", str(payload)).exit_code == 0
    made = cli("backup", WEB1, "--wait")
    assert made.exit_code == 0, made.output
    item_id = made.stdout.strip().splitlines()[-1]
    chunk = max((p for p in (cli.data_dir / "bank").rglob("*") if p.is_file() and "chunks" in p.parts),
                key=lambda p: p.stat().st_size)
    blob = bytearray(chunk.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    chunk.write_bytes(bytes(blob))
    mark = tmp_path / "mark"
    mark.write_bytes(b"MARK-A")
    assert cli("sandbox", "write", WEB1_SYS, "--offset", "0", "--from", str(mark)).exit_code == 0
    before = cli("sandbox", "hash", WEB1_SYS).output.strip().splitlines()[-1]

    result = cli("restore", item_id)
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: restore ended error: restore refused: the backup of disk ")
    assert "damaged object chunks/" in line and line.endswith("nothing written, server left as it was")
    assert "{" not in line
    assert cli("sandbox", "hash", WEB1_SYS).output.strip().splitlines()[-1] == before  # not a byte written
    servers = json.loads(cli("sandbox", "list", "--json").output)
    assert next(s for s in servers if s["id"] == WEB1)["status"] == "ACTIVE"  # never powered off


def test_wait_runs_only_its_own_job_and_no_wait_warns_without_workers(tmp_path, database_url, settings):
    cli = _cli(tmp_path, database_url)
    assert cli("sandbox", "load", str(EXAMPLE_INVENTORY)).exit_code == 0
    queued = cli("backup", DB1)
    assert queued.exit_code == 0
    assert "warning: no opencsbs serve or worker has been seen in the last minute" in queued.stderr
    other = queued.stdout.strip().splitlines()[-1]
    mine = cli("backup", WEB1, "--wait")
    assert mine.exit_code == 0, mine.output
    from opencsbs.bootstrap import build_runtime
    from opencsbs.service.checkpoint_items import find_item

    settings.data_dir = cli.data_dir

    rt = build_runtime(settings, migrate=False)
    try:
        assert find_item(rt, other).status == "protecting"  # DB1's job was left to the service's workers
        assert find_item(rt, mine.stdout.strip().splitlines()[-1]).status == "available"
        mark_seen(rt.sessions, "worker@host:1:abcdef")  # a running worker's heartbeat row
    finally:
        rt.close()
    cancelled = cli("backup", "cancel", other)
    assert cancelled.exit_code == 0, cancelled.output
    assert f"backup {other} ended error: cancelled by opencsbs-cli" in cancelled.stderr
    rs = cli("restore", mine.stdout.strip().splitlines()[-1], "--no-wait")
    assert rs.exit_code == 0 and "warning" not in rs.stderr  # a worker was seen
    restore_id = rs.stdout.strip().splitlines()[-1]
    stopped = cli("restore", "cancel", restore_id)
    assert stopped.exit_code == 0, stopped.output
    assert f"restore {restore_id} ended error: cancelled by opencsbs-cli; nothing written; server left as it was" \
        in stopped.stderr
    assert cli("restore", "cancel", restore_id).exit_code == 1
    assert "CSBS.8301" in cli("restore", "cancel", restore_id).output


def test_ctrl_c_during_backup_wait_says_the_backup_goes_on_and_exits_130(tmp_path, database_url, settings):
    cli = _cli(tmp_path, database_url)
    assert cli("sandbox", "load", str(EXAMPLE_INVENTORY)).exit_code == 0
    payload = tmp_path / "data.bin"
    payload.write_bytes(random_bytes(160 * MIB, 4) + random_bytes(160 * MIB, 5))
    assert cli("sandbox", "write", WEB1_DATA, "--offset", "0", "--from", str(payload)).exit_code == 0
    # reads paced to 32 MiB/s (engine.read_limit_mib_s): the 320 MiB take 10 s, whatever the machine's speed
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPENCSBS_ENGINE__READ_LIMIT_MIB_S="32")
    proc = subprocess.Popen([sys.executable, "-m", "opencsbs", "--data-dir", str(cli.data_dir), "--database-url",
                             database_url, "backup", WEB1, "--wait"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    first = proc.stderr.readline()
    assert "checkpoint_item" in first, first
    item_id = first.strip().rsplit(" ", 1)[-1]
    assert proc.stderr.readline().startswith("backing up")  # following it now
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert f"interrupted: the backup goes on in the service (checkpoint_item {item_id})" in err
    assert f"opencsbs backup cancel {item_id}" in err and "Traceback" not in err
    from opencsbs.bootstrap import build_runtime
    from opencsbs.service.checkpoint_items import find_item

    settings.data_dir = cli.data_dir
    rt = build_runtime(settings, migrate=False)
    try:
        status = find_item(rt, item_id).status  # not stopped by Ctrl-C (it may have finished meanwhile)
    finally:
        rt.close()
    assert status in ("protecting", "available")
    if status == "protecting":
        cancelled = cli("backup", "cancel", item_id)
        assert cancelled.exit_code == 0, cancelled.output
        assert "ended error: cancelled by opencsbs-cli" in cancelled.stderr
    again = cli("backup", WEB1, "--wait")  # the server is free
    assert again.exit_code == 0, again.output


def test_docs_name_the_cancel_commands():
    text = (Path(__file__).parent.parent / "docs" / "engine.md").read_text()
    assert "opencsbs backup cancel" in text and "/cancel" in text and "exit code 130" in text
