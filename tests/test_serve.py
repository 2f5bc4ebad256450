"""``opencsbs serve`` as a real process: data dir, inventory, YAML config file and OPENCSBS_* variables
(precedence: command line > environment > file > defaults), migrations on a fresh dir and again on restart."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import EXAMPLE_INVENTORY, free_port

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
WEB_1 = "6507cb66-90dc-4a12-a573-c9f3398f899d"
REMOTE_1 = "8bef9c8a-ce6a-41d4-9ab7-9c2babac0009"

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opencsbs", *args], capture_output=True, text=True, timeout=120,
                          env=env or clean_env())


class Served:
    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "opencsbs", *args], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_on(self, *ports: int) -> int:
        """The port among ``ports`` that answers GET / (within 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {Path(self.log.name).read_text()}")
            for port in ports:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                        return port
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not answer: {Path(self.log.name).read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def serve(tmp_path):
    started: list[Served] = []

    def _serve(*args: str, **env: str) -> Served:
        s = Served(["serve", *args], clean_env(**env), tmp_path / f"serve-{len(started)}.log")
        started.append(s)
        return s

    yield _serve
    for s in started:
        s.stop()


def check(port: int, token: str, *ids: str, project: str = "demo") -> httpx.Response:
    body = {"check_protectable": [{"resource_id": i, "resource_type": "OS::Nova::Server"} for i in ids]}
    return httpx.post(f"http://127.0.0.1:{port}/v1/{project}/providers/{PROVIDER}/resources/action", json=body,
                      headers={"X-Auth-Token": token}, timeout=30)


def alembic_version(data_dir: Path) -> list[tuple]:
    with sqlite3.connect(data_dir / "opencsbs.db") as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchall()


def test_fresh_dir_is_migrated_and_restart_keeps_state(serve, tmp_path):
    data = tmp_path / "fresh"
    port = free_port()
    s = serve("--data-dir", str(data), "--port", str(port), "--inventory", str(EXAMPLE_INVENTORY))
    s.wait_on(port)
    versions = alembic_version(data)
    assert len(versions) == 1
    token = cli("token", "create", "--project", "demo", "--data-dir", str(data)).stdout.strip().splitlines()[-1]
    r = check(port, token, WEB_1)
    assert r.json() == {"protectable": [{"resource_id": WEB_1, "resource_type": "OS::Nova::Server", "result": True}]}
    assert cli("sandbox", "set", WEB_1, "--status", "ERROR", "--data-dir", str(data)).returncode == 0
    assert check(port, token, WEB_1).json()["protectable"][0]["error_code"] == "CSBS.6006"
    s.stop()

    # restart on the same dir, inventory loaded again: migrations are a no-op, the token and the sandbox's
    # state survive, the inventory upsert restores the server's status from the file
    s = serve("--data-dir", str(data), "--port", str(port), "--inventory", str(EXAMPLE_INVENTORY))
    s.wait_on(port)
    assert alembic_version(data) == versions
    assert check(port, token, WEB_1).json()["protectable"][0]["result"] is True
    s.stop()
    s = serve("--data-dir", str(data), "--port", str(port))
    s.wait_on(port)
    assert check(port, token, WEB_1).status_code == 200


def test_precedence_command_line_env_file_defaults(serve, tmp_path):
    data = tmp_path / "prec"
    p_file, p_env, p_cli = free_port(), free_port(), free_port()
    config = tmp_path / "opencsbs.yaml"
    config.write_text(yaml.safe_dump({
        "port": p_file, "data_dir": str(data), "batch_limit": 2,
        "cloud": {"inventory": str(EXAMPLE_INVENTORY), "azs_without_backup": ["az-nobackup"]},
    }))
    token = cli("--config", str(config), "token", "create", "--project", "demo").stdout.strip().splitlines()[-1]

    # file only: its port, its batch limit, its AZ list, its inventory, default host
    s = serve("--config", str(config))
    assert s.wait_on(p_file, p_env, p_cli) == p_file
    assert check(p_file, token, WEB_1, REMOTE_1).json()["protectable"][1]["error_code"] == "CSBS.6027"
    assert check(p_file, token, WEB_1, WEB_1, WEB_1).status_code == 400
    s.stop()

    # env over file (OPENCSBS_CONFIG names the file, nested keys with __)
    s = serve(OPENCSBS_CONFIG=str(config), OPENCSBS_PORT=str(p_env), OPENCSBS_BATCH_LIMIT="3",
              OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP="[]")
    assert s.wait_on(p_file, p_env, p_cli) == p_env
    r = check(p_env, token, WEB_1, REMOTE_1, WEB_1)
    assert [v["result"] for v in r.json()["protectable"]] == [True, True, True]
    assert check(p_env, token, WEB_1, WEB_1, WEB_1, WEB_1).status_code == 400
    s.stop()

    # command line over env
    s = serve("--config", str(config), "--port", str(p_cli), OPENCSBS_PORT=str(p_env))
    assert s.wait_on(p_file, p_env, p_cli) == p_cli
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{p_env}/", timeout=1)
    s.stop()

    # --data-dir on the command line beats the file's data_dir: a new, empty state (the token is unknown there)
    other = tmp_path / "other"
    s = serve("--config", str(config), "--data-dir", str(other), "--port", str(p_cli))
    s.wait_on(p_cli)
    assert check(p_cli, token, WEB_1).status_code == 401
    assert (other / "opencsbs.db").exists()


def test_bad_config_file_fails_clearly(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("port: [1, 2]\n")
    r = cli("--config", str(config), "--data-dir", str(tmp_path / "d"), "serve")
    assert r.returncode == 2
    assert "invalid settings: port" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("how", [["--port", "70000"], ["--port", "-1"], ["--port", "0"]])
def test_out_of_range_port_fails_clearly_before_starting(tmp_path, how):
    """A port outside 1..65535 is a settings error, not an OverflowError traceback after the workers and the
    scheduler have started."""
    r = cli("--data-dir", str(tmp_path / "d"), "serve", *how)
    assert r.returncode == 2, r.stderr
    assert "invalid settings: port" in r.stderr
    assert "Traceback" not in r.stderr and "listening" not in r.stderr


def test_taken_port_fails_clearly_before_starting(tmp_path):
    """Another process listens on the port: serve says so and exits 1 before its workers, scheduler or the
    'listening' line (it used to start them, then exit 3 from inside uvicorn)."""
    import socket

    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        r = cli("--data-dir", str(tmp_path / "d"), "serve", "--host", "127.0.0.1", "--port", str(port))
    finally:
        holder.close()
    assert r.returncode == 1, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr
    assert "Traceback" not in r.stderr and "listening" not in r.stderr
