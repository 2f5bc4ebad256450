"""Shared fixtures.

Database: SQLite by default; ``OPENCSBS_TEST_DB=postgresql`` runs the same tests on the PostgreSQL server at
``OPENCSBS_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``). Each test gets a
fresh database: a SQLite file, or a PostgreSQL database cloned from a template migrated once per session.

Components that cannot be had (Keystone, libvirt, ...) make their tests skip with the reason only when ``CI`` is
unset; under CI they fail instead (``require_component``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opencsbs.config import Settings
from opencsbs.db.base import transaction

PG_ADMIN_URL = os.environ.get("OPENCSBS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
USE_PG = os.environ.get("OPENCSBS_TEST_DB", "sqlite") == "postgresql"
EXAMPLE_INVENTORY = Path(__file__).resolve().parent.parent / "examples" / "sandbox.yaml"


#: set by scripts/test.sh on every database pass after the first: only tests whose outcome can depend on the
#: database run again (see pytest_collection_modifyitems)
DATABASE_ONLY = os.environ.get("OPENCSBS_TEST_DATABASE_ONLY") == "1"


def uses_database(item: pytest.Item) -> bool:
    """True when a test runs on the database ``OPENCSBS_TEST_DB`` selects: it requests ``database_url`` (directly or
    through ``settings``, ``runtime``, ``client``, ``demo``, ``live_server``, ...), or is marked
    ``@pytest.mark.database`` (a test that reaches that database some other way)."""
    return "database_url" in getattr(item, "fixturenames", ()) or item.get_closest_marker("database") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``OPENCSBS_TEST_DATABASE_ONLY=1``, deselect the tests that do not use the database: they ran on the
    first database already and would only repeat themselves (docs/development.md, "Two databases, one run of the
    rest"). Tests marked ``postgresql_only`` (a PostgreSQL feature, e.g. LISTEN/NOTIFY) are deselected on the
    SQLite pass: they run on the PostgreSQL pass, never skip."""
    if not USE_PG:
        pg_only = [item for item in items if item.get_closest_marker("postgresql_only")]
        if pg_only:
            config.hook.pytest_deselected(items=pg_only)
            items[:] = [item for item in items if not item.get_closest_marker("postgresql_only")]
    if not DATABASE_ONLY:
        return
    keep = [item for item in items if uses_database(item)]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if not uses_database(item)])
        items[:] = keep


def require_component(available: bool, reason: str) -> None:
    """Skip (outside CI) or fail (under CI) when a component a test needs is missing."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"component missing under CI: {reason}")
    pytest.skip(reason)


def _pg_exec(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _pg_url(dbname: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A PostgreSQL database migrated to head, used as a template (only when USE_PG)."""
    if not USE_PG:
        yield None
        return
    from opencsbs.db.migrate import upgrade

    name = f"opencsbs_tmpl_{uuid.uuid4().hex[:8]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    upgrade(_pg_url(name))
    yield name
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(tmp_path: Path, pg_template: str | None) -> Iterator[str]:
    """A fresh, migrated database URL for one test."""
    if pg_template is None:
        from opencsbs.db.migrate import upgrade

        url = f"sqlite:///{tmp_path / 'opencsbs.db'}"
        upgrade(url)
        yield url
        return
    name = f"opencsbs_t_{uuid.uuid4().hex[:12]}"
    _pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _pg_url(name)
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings with a private data dir and database; the example AZ ``az-nobackup`` refuses backups."""
    s = Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0, scheduler=False)
    s.cloud.azs_without_backup = ["az-nobackup"]
    return s


@pytest.fixture
def runtime(settings: Settings):
    """A runtime on ``settings`` (schema already migrated), closed after the test."""
    from opencsbs.bootstrap import build_runtime

    rt = build_runtime(settings, migrate=False)
    yield rt
    rt.close()


@pytest.fixture
def inventory(runtime) -> Path:
    """Loads ``examples/sandbox.yaml`` into the sandbox and returns its path."""
    from opencsbs.clouds.sandbox.inventory import load_inventory_file

    with transaction(runtime.sessions) as session:
        load_inventory_file(session, EXAMPLE_INVENTORY, runtime.settings.volumes_dir)
    return EXAMPLE_INVENTORY


@pytest.fixture
def make_token(runtime):
    """``make_token(project, role="member") -> token``; role ``"cloud-admin"``: a cloud-admin token (no project,
    ``opencsbs token create --cloud-admin``)."""
    from opencsbs.auth.local import create_token

    def _make(project: str | None = "demo", role: str = "member") -> str:
        with transaction(runtime.sessions) as session:
            if role == "cloud-admin":
                return create_token(session, None, cloud_admin=True)
            return create_token(session, project, role)

    return _make


@pytest.fixture
def client(runtime) -> Iterator[TestClient]:
    """An in-process HTTP client of the API (server exceptions become 500 responses, as in production)."""
    from opencsbs.api.app import create_app

    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def demo(client, make_token, inventory):
    """``(client, headers)`` for project ``demo`` with a member token and the example inventory loaded."""
    return client, {"X-Auth-Token": make_token("demo", "member")}


# --- a real HTTP server and the real CSBS client ------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(runtime) -> Iterator[str]:
    """The API of ``runtime`` served by uvicorn on a free 127.0.0.1 port, in a thread; yields the base URL
    (``http://127.0.0.1:PORT``, no trailing slash). Real sockets: for clients outside this process (the SDK)."""
    import threading
    import time

    import uvicorn

    from opencsbs.api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@dataclass
class SdkResult:
    """What a script run by ``sdk_run`` did: exit code, output, and ``json`` = its last stdout line parsed
    (None when that line is not JSON)."""

    returncode: int
    stdout: str
    stderr: str
    json: object = None


@pytest.fixture
def sdk_run(tmp_path: Path):
    """``sdk_run(script, check=True, timeout=120, **env) -> SdkResult``: run Python source ``script`` with the
    huaweicloud-sdk-python 1.0.28 venv made by ``scripts/services/sdk.sh`` (``OPENCSBS_TEST_SDK_PYTHON``).

    ``env`` adds environment variables (values turned into strings); inherited ``OS_*`` variables are dropped so
    only what the test passes reaches the SDK. Useful ones: ``OS_DATA_PROTECT_ENDPOINT_OVERRIDE`` (the SDK's
    endpoint override for service type ``data-protect``, e.g. ``{live_server}/v1/{project_id}``). Print the
    answer as JSON on the last stdout line to get it back parsed in ``.json``. ``check``: fail the test (with
    the script's stderr) when it exits non-zero. Skips (outside CI) when the SDK venv is missing.
    """
    import json as _json
    import subprocess
    import textwrap

    python = os.environ.get("OPENCSBS_TEST_SDK_PYTHON")
    counter = [0]

    def _run(script: str, check: bool = True, timeout: float = 120, **env: object) -> SdkResult:
        require_component(bool(python) and Path(python or "").exists(),
                          "OPENCSBS_TEST_SDK_PYTHON unset: run scripts/services/sdk.sh start and source "
                          "$OPENCSBS_WORK/env/sdk.env")
        counter[0] += 1
        path = tmp_path / f"sdk_script_{counter[0]}.py"
        path.write_text(textwrap.dedent(script), encoding="utf-8")
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        child_env.update({k: str(v) for k, v in env.items()})
        proc = subprocess.run([python, str(path)], capture_output=True, text=True, timeout=timeout,
                              env=child_env, cwd=tmp_path)
        lines = proc.stdout.strip().splitlines()
        parsed = None
        if lines:
            try:
                parsed = _json.loads(lines[-1])
            except ValueError:
                parsed = None
        result = SdkResult(proc.returncode, proc.stdout, proc.stderr, parsed)
        if check and proc.returncode != 0:
            pytest.fail(f"SDK script exited {proc.returncode}:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
        return result

    return _run


# --- the Ceph RBD stack (scripts/services/ceph.sh + openstack.sh) ----------------------------------------------


@pytest.fixture(scope="session")
def rbd_world():
    """One ``tests/rbd_world.py`` ``RbdWorld`` for the whole session: Cinder RBD volumes of project csbs-demo, their
    images through librbd, servers booted from them on the libvirt host (AZ az-kvm); all removed at the end. Skips
    outside CI, fails under CI, when Ceph or the RBD parts of the OpenStack stack are missing."""
    import rbd_world as rw

    yield from rw.session_world()
