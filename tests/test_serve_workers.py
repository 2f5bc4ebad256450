"""``opencsbs serve --workers N``: N HTTP processes on PostgreSQL; SQLite refused in one line; the keep-alive
default outlives client pools' idle expiry."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import EXAMPLE_INVENTORY, PG_ADMIN_URL, _pg_exec, _pg_url, free_port, require_component
from test_serve import cli, clean_env, serve  # noqa: F401 - serve is a fixture

pytestmark = pytest.mark.slow
PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def _pg_available() -> bool:
    try:
        _pg_exec("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure: no PostgreSQL
        return False


@pytest.fixture
def pg_database():
    require_component(_pg_available(), f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name = f"opencsbs_w_{uuid.uuid4().hex[:12]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    yield _pg_url(name)
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"multiprocessing" in cmd \
                    and b"resource_tracker" not in cmd:
                kids.append(int(entry.name))
    return kids


def _wait(served, port: int, seconds: float = 180.0) -> None:
    """Until every HTTP process answers (spawned processes import the app: slow on a loaded machine)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert served.proc.poll() is None, Path(served.log.name).read_text()
        log = Path(served.log.name).read_text()
        if log.count("Application startup complete") >= 3:
            return
        time.sleep(0.2)
    raise AssertionError(f"serve did not start: {Path(served.log.name).read_text()}")


def test_serve_workers_runs_n_http_processes_on_postgresql(serve, tmp_path, pg_database):  # noqa: F811
    data = tmp_path / "d"
    env = clean_env(OPENCSBS_DATABASE_URL=pg_database)
    cli("--data-dir", str(data), "db", "upgrade", env=env)
    made = cli("--data-dir", str(data), "token", "create", "--project", "demo", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    port = free_port()
    served = serve("--port", str(port), "--data-dir", str(data), "--workers", "3", "--inventory",
                   str(EXAMPLE_INVENTORY), OPENCSBS_DATABASE_URL=pg_database)
    _wait(served, port)
    assert len(_children(served.proc.pid)) == 3
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        for _ in range(30):
            r = c.post(f"/v1/demo/providers/{PROVIDER}/resources/action", headers={"X-Auth-Token": token},
                       json={"check_protectable": [{"resource_id": "6507cb66-90dc-4a12-a573-c9f3398f899d",
                                                    "resource_type": "OS::Nova::Server"}]})
            assert r.status_code == 200 and r.json()["protectable"][0]["result"] is True, r.text
        # the h11 protocol with the JSON error body is in the worker processes too
        r = c.get("/", headers={"X-Bad": "a" * 200_000})
        assert r.status_code == 431 and r.json()["error_code"] == "CSBS.9001"
    served.stop()
    assert served.proc.returncode == 0
    log = Path(served.log.name).read_text()
    assert "3 HTTP processes" in log


def test_serve_workers_on_sqlite_is_refused_in_one_line(tmp_path):
    result = cli("--data-dir", str(tmp_path / "d"), "serve", "--workers", "2", "--port", str(free_port()))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert lines == ["Error: --workers 2 needs PostgreSQL (database_url); SQLite is served by one process "
                     "(leave --workers out)"], result.stderr


def test_keepalive_outlives_client_pools():
    """The server keeps an idle connection longer than httpx's pool keeps it (5 s): the client always gives up an
    idle connection first, so no request is sent on a connection the server is closing."""
    from opencsbs.config import Settings

    assert Settings().keepalive_timeout > httpx.Limits().keepalive_expiry + 30
