"""What an operator sees: ``/healthz`` and ``/readyz`` without a token, Prometheus ``/metrics`` (parsed with
prometheus-client's own parser), request ids in a response header and on log lines, job ids and each job's start
and end (bytes, duration) in the logs, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import EXAMPLE_INVENTORY, free_port
from engine_helpers import fill, item_of, protect, run_jobs
from test_serve import cli, serve  # noqa: F401 - serve is a fixture

WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
WEB_1_SYS = "0a6c4e58-3a4b-4bde-9a0b-5d7d0f8e0a01"
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted label pairs): value}`` of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


# --- health ------------------------------------------------------------------------------------------------


def test_healthz_and_readyz_need_no_token_and_say_what_is_ready(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert REQUEST_ID.match(r.headers["x-openstack-request-id"])
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["not_ready"] == []
    assert set(body["checks"]) == {"database", "bank", "cloud"}
    assert all(c["ok"] and c["seconds"] >= 0 for c in body["checks"].values())


def test_readyz_answers_503_naming_an_unreachable_bank(settings):
    from fastapi.testclient import TestClient

    from opencsbs.api.app import create_app
    from opencsbs.bootstrap import build_runtime

    port = free_port()
    settings.bank.backend = "s3"
    settings.bank.s3_endpoint = f"http://127.0.0.1:{port}"
    settings.bank.s3_access_key, settings.bank.s3_secret_key = "key", "very-secret-key"
    runtime = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
            started = time.monotonic()
            r = c.get("/readyz")
            assert time.monotonic() - started < 15
    finally:
        runtime.close()
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "not ready" and body["not_ready"] == ["bank"]
    assert body["checks"]["database"]["ok"] and body["checks"]["cloud"]["ok"]
    error = body["checks"]["bank"]["error"]
    assert "\n" not in error and "very-secret-key" not in error and error, error


def test_readyz_answers_503_naming_an_unreachable_database(tmp_path):
    from fastapi.testclient import TestClient

    from opencsbs.api.app import create_app
    from opencsbs.config import Settings
    from opencsbs.bootstrap import build_runtime

    url = f"postgresql+psycopg://opencsbs:pw-not-shown@127.0.0.1:{free_port()}/nothing"
    runtime = build_runtime(Settings(data_dir=tmp_path / "d", database_url=url, workers=0), migrate=False)
    try:
        with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
            r = c.get("/readyz")
            alive = c.get("/healthz")
            metrics = c.get("/metrics")
    finally:
        runtime.close()
    assert alive.status_code == 200
    # the scrape still answers, with the request metrics, and says the database figures are missing
    assert metrics.status_code == 200 and samples(metrics.text)[("opencsbs_database_up", ())] == 0
    assert r.status_code == 503
    body = r.json()
    assert "database" in body["not_ready"] and body["checks"]["bank"]["ok"]
    assert "pw-not-shown" not in r.text


def test_the_openapi_document_lists_the_operations_routes_without_a_token(client):
    doc = client.get("/openapi.json").json()
    for path in ("/healthz", "/readyz", "/metrics"):
        op = doc["paths"][path]["get"]
        assert "security" not in op and not any(p["name"].lower() == "x-auth-token"
                                                for p in op.get("parameters", [])), path
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]


# --- metrics -----------------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_template_and_status(demo):
    client, headers = demo
    before = scrape(client)
    for policy_id in ("a1", "b2", "c3"):
        client.get(f"/v1/demo/policies/{policy_id}", headers=headers)
    client.get("/v1/demo/policies/", headers=headers)  # the trailing slash is the same route
    client.get("/v1/demo/policies")  # no token: 401
    client.get("/no/such/path")
    after = scrape(client)
    key = ("opencsbs_http_requests_total", (("method", "GET"), ("route", "/v1/{project_id}/policies/{policy_id}"),
                                            ("status", "404")))
    assert after[key] - before.get(key, 0) == 3
    listed = ("opencsbs_http_requests_total", (("method", "GET"), ("route", "/v1/{project_id}/policies"),
                                               ("status", "200")))
    assert after[listed] - before.get(listed, 0) == 1
    refused = ("opencsbs_http_requests_total", (("method", "GET"), ("route", "/v1/{project_id}/policies"),
                                                ("status", "401")))
    assert after[refused] - before.get(refused, 0) == 1
    assert after[("opencsbs_http_requests_total", (("method", "GET"), ("route", "unmatched"),
                                                   ("status", "404")))] >= 1
    # raw paths never become labels
    assert not any("a1" in dict(labels).get("route", "") for _, labels in after)
    latency = ("opencsbs_http_request_duration_seconds_count", key[1])
    assert after[latency] - before.get(latency, 0) == 3


def test_metrics_show_jobs_bytes_and_the_last_good_backup_per_server(demo, runtime):
    client, headers = demo
    fill(runtime, WEB_1_SYS, seed=1, chunks=((0, 3 << 20),))
    before = scrape(client)
    r = protect(client, headers, WEB_1)
    assert r.status_code == 200, r.text
    checkpoint = r.json()["checkpoint"]["id"]
    queued = scrape(client)
    assert queued[("opencsbs_job_queue_depth", ())] == 1
    assert queued[("opencsbs_jobs", (("kind", "backup"), ("status", "pending")))] == 1
    assert queued[("opencsbs_job_oldest_pending_age_seconds", ())] >= 0
    assert run_jobs(runtime) == 1
    item = item_of(client, headers, checkpoint)
    assert item["status"] == "available"
    after = scrape(client)
    assert after[("opencsbs_job_queue_depth", ())] == 0 and after[("opencsbs_database_up", ())] == 1
    assert after[("opencsbs_jobs", (("kind", "backup"), ("status", "done")))] == 1
    assert after[("opencsbs_jobs_finished_last_hour", (("kind", "backup"), ("result", "done")))] == 1
    assert after[("opencsbs_jobs_finished_last_hour", (("kind", "backup"), ("result", "failed")))] == 0
    assert after[("opencsbs_job_last_duration_seconds", (("kind", "backup"), ("result", "done")))] >= 0
    read = after[("opencsbs_backup_read_bytes_total", ())] - before[("opencsbs_backup_read_bytes_total", ())]
    stored = after[("opencsbs_backup_stored_bytes_total", ())] - before[("opencsbs_backup_stored_bytes_total", ())]
    assert read > 0 and stored > 0
    last = after[("opencsbs_last_successful_backup_timestamp_seconds", (("project_id", "demo"),
                                                                         ("server_id", WEB_1)))]
    assert abs(last - time.time()) < 600


def test_a_policy_server_without_any_backup_reports_time_zero(demo):
    from policy_helpers import body, create

    client, headers = demo
    assert create(client, headers, body("never-ran")).status_code == 200
    got = scrape(client)
    assert got[("opencsbs_last_successful_backup_timestamp_seconds", (("project_id", "demo"),
                                                                       ("server_id", WEB_1)))] == 0


def test_metrics_token_is_required_when_set(demo, runtime):
    client, _ = demo
    runtime.settings.metrics_token = "scrape-me"
    r = client.get("/metrics")
    assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "opencsbs_jobs" in client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text


def test_a_scrape_stays_cheap_with_many_jobs_and_backups(runtime, client):
    """10 000 jobs and 3 000 backups of 1 000 servers: one scrape well under a second."""
    from datetime import timedelta

    from sqlalchemy import insert

    from opencsbs.core.timeutil import utcnow
    from opencsbs.db.base import transaction
    from opencsbs.db.models import Checkpoint, CheckpointItem, Job

    now = utcnow()
    with transaction(runtime.sessions) as session:
        session.execute(insert(Job), [
            {"id": f"{i:036d}", "kind": ("backup", "restore", "delete")[i % 3], "project_id": "p", "target_id": "t",
             "status": ("done", "failed", "pending", "done")[i % 4], "created_at": now - timedelta(minutes=i),
             "updated_at": now, "finished_at": now - timedelta(minutes=i - 1) if i % 4 != 2 else None,
             "state": {}} for i in range(10_000)])
        session.execute(insert(Checkpoint), [{"id": "c" * 36, "project_id": "p", "provider_id": "x"}])
        session.execute(insert(CheckpointItem), [
            {"id": f"i{i:035d}", "checkpoint_id": "c" * 36, "project_id": "p", "name": f"b{i}",
             "resource_id": f"server-{i % 1000}", "resource_type": "OS::Nova::Server", "status": "available",
             "protected_at": now - timedelta(hours=i % 48), "tags": [], "backup_data": {}} for i in range(3000)])
    scrape(client)  # warm-up: the first scrape builds the registry
    started = time.perf_counter()
    got = scrape(client)
    seconds = time.perf_counter() - started
    assert got[("opencsbs_job_queue_depth", ())] == 2500
    assert sum(1 for name, _ in got if name == "opencsbs_last_successful_backup_timestamp_seconds") == 1000
    assert seconds < 1.0, seconds


# --- logs --------------------------------------------------------------------------------------------------


@pytest.fixture
def captured():
    """Our handler writing to a buffer (removed after the test)."""
    from opencsbs import logs

    buffer = io.StringIO()
    handler = logs.configure("info", "text", stream=buffer)
    yield buffer, handler
    logging.getLogger().removeHandler(handler)


def test_every_job_line_carries_the_job_id_and_its_end_says_bytes_and_duration(demo, runtime, captured):
    buffer, _ = captured
    client, headers = demo
    fill(runtime, WEB_1_SYS, seed=2, chunks=((0, 3 << 20),))
    r = protect(client, headers, WEB_1)
    checkpoint = r.json()["checkpoint"]["id"]
    run_jobs(runtime)
    item = item_of(client, headers, checkpoint)
    lines = [line for line in buffer.getvalue().splitlines() if "opencsbs.engine" in line]
    job = re.search(r"\[job=([0-9a-f-]{36})\]", lines[0]).group(1)
    line_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG) opencsbs\.engine "
                         rf"\[job={job}\] ")
    assert all(line_re.match(line) for line in lines), lines
    assert any(f"backup job {job} of {WEB_1} started" in line for line in lines), lines
    done = [line for line in lines if f"backup job {job} of {WEB_1} done in" in line]
    assert len(done) == 1, lines
    read = re.search(r"read [\d.]+ \w+ \((\d+) bytes\), stored [\d.]+ \w+ \((\d+) bytes\)", done[0])
    assert item["status"] == "available" and read and int(read.group(1)) > 0 and int(read.group(2)) > 0, done


def test_json_logs_are_one_object_a_line_with_the_request_id(demo):
    from opencsbs import logs

    client, headers = demo
    buffer = io.StringIO()
    handler = logs.configure("info", "json", stream=buffer)
    try:
        log = logging.getLogger("opencsbs.test")

        @client.app.get("/opencsbs/v1/_log_probe", include_in_schema=False)
        def _probe():
            log.info("inside a request")
            return {}

        r = client.get("/opencsbs/v1/_log_probe")
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    mine = [rec for rec in records if rec["message"] == "inside a request"]
    assert mine and mine[0]["request_id"] == r.headers["x-openstack-request-id"]
    assert mine[0]["level"] == "INFO" and mine[0]["logger"] == "opencsbs.test"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", mine[0]["time"])


def test_a_client_request_id_is_kept_and_a_malformed_one_replaced(client):
    mine = "req-0c9f8a7e-1b2c-4d3e-8f40-5a6b7c8d9e0f"
    assert client.get("/healthz", headers={"X-Openstack-Request-Id": mine}).headers[
        "x-openstack-request-id"] == mine
    other = client.get("/healthz", headers={"X-Openstack-Request-Id": "evil\r\nheader"})
    assert REQUEST_ID.match(other.headers["x-openstack-request-id"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_real_serve_logs_requests_and_jobs_with_ids_and_no_token(serve, tmp_path, fmt):  # noqa: F811
    data = tmp_path / "d"
    made = cli("--data-dir", str(data), "token", "create", "--project", "demo")
    token = made.stdout.strip().splitlines()[-1]
    port = free_port()
    served = serve("--port", str(port), "--data-dir", str(data), "--inventory", str(EXAMPLE_INVENTORY),
                   OPENCSBS_LOG_FORMAT=fmt)
    served.wait_on(port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        r = c.post(f"/v1/demo/providers/fc4d5750-22e7-4798-8a46-f48f62c4c1da/resources/{WEB_1}/action",
                   json={"protect": {}}, headers={"X-Auth-Token": token})
        assert r.status_code == 200, r.text
        rid = r.headers["x-openstack-request-id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            families = samples(c.get("/metrics").text)
            if families[("opencsbs_jobs", (("kind", "backup"), ("status", "done")))] == 1:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(Path(served.log.name).read_text())
    time.sleep(0.5)
    served.stop()
    log = Path(served.log.name).read_text()
    assert token not in log
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("opencsbs listening")]
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        access = [rec for rec in records if rec["logger"] == "uvicorn.access" and "POST" in rec["message"]]
        assert access and access[0]["request_id"] == rid
        ended = [rec for rec in records if " done in " in rec["message"]]
        assert ended and ended[0]["job_id"] and "stored" in ended[0]["message"] and ended[0]["level"] == "INFO"
    else:
        stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|DEBUG|CRITICAL) ")
        assert all(stamp.match(line) for line in lines), log
        assert any(f"[{rid}]" in line and "POST /v1/demo/providers" in line for line in lines), log
        assert any(re.search(r"\[job=[0-9a-f-]{36}\] backup job .* done in [\d.]+ s, read", line)
                   for line in lines), log


@pytest.mark.slow
def test_with_several_http_processes_any_scrape_counts_every_process_requests(serve, tmp_path):  # noqa: F811
    """``serve --workers 2`` (PostgreSQL): the request metrics are shared through prometheus-client's multiprocess
    mode, so whichever process answers ``/metrics`` counts the requests of both."""
    from test_serve_workers import _children, _pg_available

    from conftest import _pg_exec, _pg_url, require_component

    require_component(_pg_available(), "PostgreSQL not reachable")
    name = f"opencsbs_m_{time.time_ns()}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    try:
        port = free_port()
        served = serve("--port", str(port), "--data-dir", str(tmp_path / "d"), "--workers", "2",
                       OPENCSBS_DATABASE_URL=_pg_url(name))
        _wait_two(served)
        pids = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them over both processes
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
            assert r.status_code == 200
        for _ in range(6):
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
            got = samples(text)
            pids.add(len(_children(served.proc.pid)))
            key = ("opencsbs_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))
            assert got[key] == 40, {k: v for k, v in got.items() if k[0] == "opencsbs_http_requests_total"}
            assert ("opencsbs_jobs", (("kind", "backup"), ("status", "done"))) in got
        assert pids == {2}
        # each process wrote its own values, and the scrape summed them
        files = sorted(p.name for p in (tmp_path / "d" / "metrics").iterdir() if p.name.startswith("counter_"))
        assert len(files) == 2, files
    finally:
        served.stop()
        _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_two(served) -> None:
    """Until both HTTP processes have started (their "Application startup complete" lines)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert served.proc.poll() is None, Path(served.log.name).read_text()
        if Path(served.log.name).read_text().count("Application startup complete") >= 2:
            return
        time.sleep(0.2)
    raise AssertionError(Path(served.log.name).read_text())


@pytest.mark.slow
def test_opencsbs_worker_reports_each_job_it_runs(tmp_path):
    """``opencsbs worker`` used to print its banner and then nothing: now each job's start and end, with its id."""
    import subprocess
    import sys

    from test_serve import clean_env

    data = str(tmp_path / "d")
    assert cli("--data-dir", data, "sandbox", "load", str(EXAMPLE_INVENTORY)).returncode == 0
    queued = cli("--data-dir", data, "backup", WEB_1)
    assert queued.returncode == 0, queued.stderr
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "opencsbs", "--data-dir", data, "worker"], env=clean_env(),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while " done in " not in log_path.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    lines = log_path.read_text().splitlines()
    started = [line for line in lines if " started (project demo" in line]
    done = [line for line in lines if " done in " in line]
    assert len(started) == 1 and len(done) == 1, lines
    job = re.search(r"\[job=([0-9a-f-]{36})\] backup job \1 of " + WEB_1, done[0])
    assert job and f"[job={job.group(1)}]" in started[0], lines
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO opencsbs\.engine ", done[0]), done
