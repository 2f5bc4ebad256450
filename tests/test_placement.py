"""Placement: a job runs only on a worker that serves what it needs (its libvirt host, its sandbox host, its Ceph
backend, its zone); a job no live worker can serve says so and runs once one appears; workers are listed with
their host, capabilities, current job and silent state; a new job wakes an idle worker at once
(docs/engine.md "Placement")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from engine_helpers import MIB, WEB1, WEB1_SYS, item_of, protect, random_bytes, write
from opencsbs.cli import main
from opencsbs.clouds.libvirt.config import LibvirtConfig, uri_host
from opencsbs.core.placement import can_run, missing, unservable
from opencsbs.core.timeutil import utcnow
from opencsbs.db.base import transaction
from opencsbs.db.models import Job, WorkerSeen
from opencsbs.engine.jobs import claim_next, enqueue
from opencsbs.engine.placement import worker_capabilities
from opencsbs.engine.worker import Worker, WorkerPool, mark_seen

KVM_A = ["driver:libvirt", "host:kvm-a", "libvirt:kvm-a", "zone:*"]
KVM_B = ["driver:libvirt", "host:kvm-b", "libvirt:kvm-b", "zone:*"]


def _enqueue(runtime, needs, kind="backup", target="t-1") -> str:
    with transaction(runtime.sessions) as session:
        return enqueue(session, kind, "demo", target, needs=needs).id


# --- the rules ----------------------------------------------------------------------------------------------


def test_a_need_is_met_exactly_or_by_a_whole_kind():
    assert can_run(["libvirt:kvm-a", "zone:nova"], KVM_A)
    assert missing(["libvirt:kvm-a", "zone:nova"], KVM_B) == ["libvirt:kvm-a"]
    assert missing(["zone:az2"], ["zone:az1"]) == ["zone:az2"]
    assert can_run([], ["host:x"]) and can_run(None, [])
    assert can_run(["libvirt:kvm-a"], None)  # a worker row of an older version told nothing: serves anything
    assert unservable(["libvirt:kvm-a"], [("w1", KVM_B)], 30) == (
        "no live worker can serve libvirt:kvm-a (live workers: 1, none offers it); it runs as soon as one does")
    assert unservable(["libvirt:kvm-a"], [("w1", KVM_B), ("w2", KVM_A)], 30) is None
    assert "no live worker (none seen in the last 30 s)" in unservable(["libvirt:kvm-a"], [], 30)


def test_the_libvirt_host_of_a_uri():
    assert uri_host("qemu+ssh://backup@kvm-2:22/system") == "kvm-2"
    assert uri_host("qemu:///system") is None
    assert LibvirtConfig(uri="qemu+ssh://backup@kvm-2/system").host_name == "kvm-2"
    assert LibvirtConfig(uri="qemu:///system", host="kvm-9").host_name == "kvm-9"


# --- claims -------------------------------------------------------------------------------------------------


def test_a_libvirt_host_job_is_never_claimed_by_a_worker_of_another_host(runtime):
    job_a = _enqueue(runtime, ["driver:libvirt", "libvirt:kvm-a", "zone:nova"], target="on-a")
    job_any = _enqueue(runtime, None, kind="delete", target="bank-only")
    # kvm-b's worker skips kvm-a's job (older) and takes the bank-only one; then there is nothing for it
    got = claim_next(runtime.sessions, "w-b", 30, capabilities=KVM_B)
    assert got is not None and got.id == job_any
    assert claim_next(runtime.sessions, "w-b", 30, capabilities=KVM_B) is None
    # a worker of kvm-a serving only zone az1 does not take a job of zone nova either
    assert claim_next(runtime.sessions, "w-a1", 30, capabilities=["libvirt:kvm-a", "driver:libvirt",
                                                                    "zone:az1"]) is None
    got = claim_next(runtime.sessions, "w-a", 30, capabilities=KVM_A)
    assert got is not None and got.id == job_a


def test_a_silent_workers_job_is_resumed_only_where_placement_allows(runtime):
    job_a = _enqueue(runtime, ["driver:libvirt", "libvirt:kvm-a"])
    first = claim_next(runtime.sessions, "w-a1", 30, capabilities=KVM_A)
    assert first is not None and first.id == job_a
    with transaction(runtime.sessions) as session:  # w-a1 went silent: its lease ran out
        session.execute(update(Job).where(Job.id == job_a).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert claim_next(runtime.sessions, "w-b", 30, capabilities=KVM_B) is None
    again = claim_next(runtime.sessions, "w-a2", 30, capabilities=KVM_A)
    assert again is not None and again.id == job_a and again.attempts == 2 and again.step == "start"


# --- what a user sees ---------------------------------------------------------------------------------------


@pytest.fixture
def settings(settings):
    """The sandbox's files are on host ``files-host``; short leases and polls, so silence shows quickly."""
    settings.worker.host = "files-host"
    settings.engine.lease_seconds = 3.0
    settings.engine.poll_seconds = 0.2
    return settings


def _start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run_forever, name=worker.name, daemon=True)
    thread.start()
    return thread


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _cli(tmp_path, database_url):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, ["--data-dir", str(tmp_path / "cli-data"), "--database-url", database_url, *args])

    return run


def test_a_job_no_live_worker_can_serve_says_why_and_runs_once_one_registers(demo, runtime, tmp_path,
                                                                            database_url):
    client, headers = demo
    write(runtime, WEB1_SYS, 0, random_bytes(2 * MIB, 7))
    item_id = item_of(client, headers, protect(client, headers, WEB1).json()["checkpoint"]["id"])["id"]
    job = client.get(f"/opencsbs/v1/demo/checkpoint_items/{item_id}/job", headers=headers).json()["job"]
    assert job["status"] == "pending" and "sandbox:files-host" in job["needs"] and "driver:sandbox" in job["needs"]
    assert job["waiting"].startswith("no live worker (none seen in the last 3 s)")

    # a worker of another host registers: it does not take the job, and the job says what nobody offers
    other_caps = worker_capabilities(runtime)
    other_caps = [c for c in other_caps if not c.startswith(("sandbox:", "host:"))] + ["sandbox:other-host",
                                                                                         "host:other-host"]
    other = Worker(runtime, "worker@other-host", capabilities=other_caps)
    mine = Worker(runtime, "worker@files-host")
    threads = [_start(other)]
    job_url = f"/opencsbs/v1/demo/checkpoint_items/{item_id}/job"
    try:
        waiting = _until(lambda: (w := client.get(job_url, headers=headers).json()["job"]["waiting"])
                         and "live workers: 1" in w and w, 10, "the other host's worker to be seen")
        assert waiting == ("no live worker can serve sandbox:files-host (live workers: 1, none offers it); "
                           "it runs as soon as one does")
        time.sleep(1.0)  # several polls of the other worker
        assert client.get(f"/v1/demo/checkpoint_items/{item_id}", headers=headers).json()[
            "checkpoint_item"]["status"] == "protecting"
        shown = _cli(tmp_path, database_url)("backup", "show", item_id)
        assert shown.exit_code == 0, shown.output
        assert "waiting" in shown.output and "no live worker can serve sandbox:files-host" in shown.output

        # a worker of the files' host registers: the backup runs at once
        threads.append(_start(mine))
        _until(lambda: client.get(job_url, headers=headers).json()["job"]["status"] == "done", 30,
               "the backup job to end")
        assert client.get(f"/v1/demo/checkpoint_items/{item_id}", headers=headers).json()[
            "checkpoint_item"]["status"] == "available"
        job = client.get(job_url, headers=headers).json()["job"]
        assert job["owner"] == "worker@files-host" and job["waiting"] is None
        assert "waiting" not in _cli(tmp_path, database_url)("backup", "show", item_id).output
    finally:
        other.stop.set()
        mine.stop.set()
        for t in threads:
            t.join(10)


def test_workers_are_listed_with_host_capabilities_current_job_and_silent_state(runtime, client, make_token,
                                                                                tmp_path, database_url):
    mark_seen(runtime.sessions, "w-live", host="kvm-a", capabilities=KVM_A, current_job=None)
    job_id = _enqueue(runtime, ["libvirt:kvm-b"], target="item-b")
    job = claim_next(runtime.sessions, "w-gone", 30, capabilities=KVM_B)
    mark_seen(runtime.sessions, "w-gone", host="kvm-b", capabilities=KVM_B, current_job=job.id)
    with transaction(runtime.sessions) as session:  # w-gone's last heartbeat is older than the lease (3 s)
        session.execute(update(WorkerSeen).where(WorkerSeen.name == "w-gone")
                        .values(seen_at=utcnow() - timedelta(seconds=40)))

    admin = {"X-Auth-Token": make_token(role="cloud-admin")}
    r = client.get("/opencsbs/v1/demo/workers", headers=admin)
    assert r.status_code == 200, r.text
    rows = {w["name"]: w for w in r.json()["workers"]}
    assert rows["w-live"]["host"] == "kvm-a" and rows["w-live"]["capabilities"] == KVM_A
    assert rows["w-live"]["silent"] is False and rows["w-live"]["current_job"] is None
    assert rows["w-gone"]["silent"] is True and rows["w-gone"]["seen_seconds_ago"] >= 40
    assert (rows["w-gone"]["current_job"], rows["w-gone"]["current_kind"], rows["w-gone"]["current_target"]) == (
        job_id, "backup", "item-b")
    member = client.get("/opencsbs/v1/demo/workers", headers={"X-Auth-Token": make_token("demo", "admin")})
    assert member.status_code == 403 and member.json()["error_code"]

    out = _cli(tmp_path, database_url)("workers")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["NAME", "HOST", "CAPABILITIES", "JOB", "LAST", "SEEN", "STATE"]
    gone = next(line for line in lines if line.startswith("w-gone"))
    assert "kvm-b" in gone and f"backup item-b" in gone and gone.rstrip().endswith("silent")
    live = next(line for line in lines if line.startswith("w-live"))
    assert "libvirt:kvm-a" in live and live.rstrip().endswith("idle")
    as_json = json.loads(_cli(tmp_path, database_url)("workers", "--json").output)
    assert {w["name"]: w["silent"] for w in as_json} == {"w-live": False, "w-gone": True}


def test_a_new_job_wakes_an_idle_worker_of_this_process_long_before_its_poll(demo, runtime):
    client, headers = demo
    runtime.settings.engine.poll_seconds = 30.0
    pool = WorkerPool(runtime, 1).start()
    try:
        _until(lambda: _seen(runtime), 10, "the worker to register")
        time.sleep(0.5)  # its first look found nothing: it waits for a wake-up or 30 s
        started = time.monotonic()
        item_id = item_of(client, headers, protect(client, headers, WEB1).json()["checkpoint"]["id"])["id"]
        _until(lambda: client.get(f"/v1/demo/checkpoint_items/{item_id}", headers=headers).json()
               ["checkpoint_item"]["status"] == "available", 25, "the backup to be made")
        assert time.monotonic() - started < 15  # a poll would have come after 30 s
    finally:
        pool.stop()


def _seen(runtime) -> list:
    with runtime.sessions() as session:
        return session.scalars(select(WorkerSeen.name)).all()


@pytest.mark.postgresql_only
def test_a_job_enqueued_by_another_process_wakes_an_idle_worker_at_once_on_postgresql(demo, runtime, database_url):
    """PostgreSQL: the API process's enqueue NOTIFYs, the ``opencsbs worker`` process LISTENs (SQLite has only the
    poll between processes; this test is deselected on the SQLite pass)."""
    assert database_url.startswith("postgresql")
    client, headers = demo
    env = dict(os.environ, OPENCSBS_ENGINE__POLL_SECONDS="30", OPENCSBS_WORKER__HOST="files-host")
    proc = subprocess.Popen([sys.executable, "-m", "opencsbs", "--data-dir", str(runtime.settings.data_dir),
                             "--database-url", database_url, "worker"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: _seen(runtime), 60, "the worker process to register")
        time.sleep(2.0)  # it has looked for jobs and found none: the next poll is 30 s away
        started = time.monotonic()
        item_id = item_of(client, headers, protect(client, headers, WEB1).json()["checkpoint"]["id"])["id"]
        _until(lambda: client.get(f"/v1/demo/checkpoint_items/{item_id}", headers=headers).json()
               ["checkpoint_item"]["status"] == "available", 25, "the backup to be made")
        assert time.monotonic() - started < 15  # the poll would have come after 30 s
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert "serves driver:sandbox host:files-host sandbox:files-host zone:*" in err


def test_housekeeping_forgets_workers_silent_for_a_day(runtime):
    from opencsbs.engine.housekeeping import housekeep

    mark_seen(runtime.sessions, "w-old", host="kvm-a", capabilities=KVM_A)
    mark_seen(runtime.sessions, "w-recent", host="kvm-b", capabilities=KVM_B)
    with transaction(runtime.sessions) as session:
        session.execute(update(WorkerSeen).where(WorkerSeen.name == "w-old")
                        .values(seen_at=utcnow() - timedelta(hours=25)))
        session.execute(update(WorkerSeen).where(WorkerSeen.name == "w-recent")
                        .values(seen_at=utcnow() - timedelta(hours=23)))
    runtime.settings.engine.gc_interval_seconds = 0
    housekeep(runtime)
    assert _seen(runtime) == ["w-recent"]


def test_a_restore_needs_its_target_servers_host_and_says_why_it_waits(demo, runtime, tmp_path, database_url):
    from engine_helpers import restore, run_jobs

    client, headers = demo
    write(runtime, WEB1_SYS, 0, random_bytes(MIB, 8))
    cp = protect(client, headers, WEB1).json()["checkpoint"]
    run_jobs(runtime)  # this process's own worker: it serves files-host
    item = item_of(client, headers, cp["id"])
    assert item["status"] == "available"
    r = restore(client, headers, item, WEB1)
    assert r.status_code == 200, r.text
    restore_id = r.json()["restore"]["id"]
    got = client.get(f"/opencsbs/v1/demo/restores/{restore_id}/job", headers=headers)
    assert got.status_code == 200, got.text
    job = got.json()["job"]
    assert job["kind"] == "restore" and "sandbox:files-host" in job["needs"]
    assert job["waiting"].startswith("no live worker")
    shown = _cli(tmp_path, database_url)("restore", "show", restore_id)
    assert shown.exit_code == 0 and "no live worker" in shown.output, shown.output
    assert client.get(f"/opencsbs/v1/demo/restores/{'0' * 8}/job", headers=headers).json()["error_code"] == \
        "CSBS.6040"
    assert Worker(runtime, "w-other", capabilities=KVM_A).run_one() is False  # not a libvirt job
    assert Worker(runtime, "w-files").run_one() is True
    assert client.get(f"/opencsbs/v1/demo/restores/{restore_id}/job", headers=headers).json()["job"][
        "status"] == "done"


def test_worker_settings_are_checked_like_every_setting(tmp_path, client):
    from opencsbs.config import ConfigError, load_settings

    good = tmp_path / "good.yaml"
    good.write_text("worker:\n  host: kvm-2\n  zones: [az1, az2]\n")
    s = load_settings(good)
    assert (s.worker.host, s.worker.zones, s.worker.capabilities) == ("kvm-2", ["az1", "az2"], None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  hots: kvm-2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'worker.hots' \(did you mean 'worker.host'\?\)"):
        load_settings(bad)
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/opencsbs/v1/{project_id}/workers", "/opencsbs/v1/{project_id}/checkpoint_items/{checkpoint_item_id}/job",
            "/opencsbs/v1/{project_id}/restores/{restore_id}/job"} <= set(paths)


def test_libvirt_jobs_need_the_domains_kvm_host_and_only_its_workers_serve_them(settings):
    """The needs and capabilities come from the libvirt driver's settings (no libvirt call is made): the API's
    driver reaches kvm-2 over SSH, one worker runs on kvm-2 (qemu:///system), another on kvm-3."""
    from opencsbs.bootstrap import build_runtime
    from opencsbs.core.facts import ServerFacts
    from opencsbs.engine.placement import server_needs

    def runtime_of(**cloud):
        s = settings.model_copy(deep=True)
        s.cloud.driver = "libvirt"
        for key, value in cloud.items():
            setattr(s.cloud, key, value)
        return s

    api_settings = runtime_of(libvirt_uri="qemu+ssh://backup@kvm-2/system")
    kvm2 = runtime_of(libvirt_uri="qemu:///system")
    kvm2.worker.host = "kvm-2"
    kvm3 = runtime_of(libvirt_uri="qemu:///system")
    kvm3.worker.host = "kvm-3"
    runtimes = [build_runtime(s, migrate=False) for s in (api_settings, kvm2, kvm3)]
    api, on_kvm2, on_kvm3 = runtimes
    try:
        needs = server_needs(api, ServerFacts(id="dom-1", project_id="demo", availability_zone="nova"))
        assert needs == ["driver:libvirt", "libvirt:kvm-2", "zone:nova"]
        assert worker_capabilities(on_kvm2) == ["driver:libvirt", "host:kvm-2", "libvirt:kvm-2", "zone:*"]
        job_id = _enqueue(api, needs, target="dom-1-backup")
        assert Worker(on_kvm3, "worker@kvm-3").capabilities == ["driver:libvirt", "host:kvm-3", "libvirt:kvm-3",
                                                                "zone:*"]
        assert claim_next(on_kvm3.sessions, "worker@kvm-3", 30,
                          capabilities=Worker(on_kvm3, "worker@kvm-3").capabilities) is None
        got = claim_next(on_kvm2.sessions, "worker@kvm-2", 30, capabilities=Worker(on_kvm2, "w").capabilities)
        assert got is not None and got.id == job_id
    finally:
        for rt in runtimes:
            rt.close()
