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
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opencsbs.config import Settings
from opencsbs.db.base import transaction

PG_ADMIN_URL = os.environ.get("OPENCSBS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
USE_PG = os.environ.get("OPENCSBS_TEST_DB", "sqlite") == "postgresql"
EXAMPLE_INVENTORY = Path(__file__).resolve().parent.parent / "examples" / "sandbox.yaml"


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
    from opencsbs.runtime import Runtime

    rt = Runtime.from_settings(settings, migrate=False)
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
    """``make_token(project, role="member") -> token``."""
    from opencsbs.auth.local import create_token

    def _make(project: str = "demo", role: str = "member") -> str:
        with transaction(runtime.sessions) as session:
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
