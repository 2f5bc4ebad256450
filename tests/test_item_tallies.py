"""Counts and quota usage from the tally rows the database triggers keep (db/tallies.py, migration 0011) are
exactly what counting the backups gives, through every kind of change: inserts one by one and in bulk, status
changes, stored bytes set at the end of a backup, a project moved, rows deleted directly or by the cascade of their
checkpoint; before and after housekeeping folds the rows; and on a database upgraded with backups already in it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from conftest import USE_PG, _pg_exec, _pg_url

from opencsbs.db.base import make_engine, new_id, transaction
from opencsbs.db.migrate import alembic_config, upgrade
from opencsbs.db.models import Checkpoint, CheckpointItem, CheckpointItemTally
from opencsbs.db.tallies import TRIGGERS, compact, tally
from opencsbs.service.backups import quota_usage
from opencsbs.service.checkpoint_items import ItemQuery, count_items

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
T0 = datetime(2026, 1, 1)
STATUSES = ("protecting", "available", "error", "deleted")


def _rows(project: str, count: int, start: int = 0) -> tuple[list[dict], list[dict]]:
    checkpoints, items = [], []
    for n in range(start, start + count):
        at = T0 + timedelta(seconds=n)
        cp_id = new_id()
        checkpoints.append(dict(id=cp_id, project_id=project, provider_id=PROVIDER, status="available",
                                policy_id=None, plan={"id": "p", "name": "plan", "resources": []}, created_at=at,
                                updated_at=at))
        items.append(dict(id=new_id(), checkpoint_id=cp_id, project_id=project, name=f"bk_{n}", description="",
                          status=STATUSES[n % 4], resource_id=new_id(), resource_type="OS::Nova::Server",
                          resource_name=f"server-{n}", image_type="backup", tags=[], backup_data={},
                          stored_bytes=1000 + n, created_at=at, updated_at=at))
    return checkpoints, items


def _truth(session, project: str | None, status: str | None) -> tuple[int, int]:
    query = select(func.count(CheckpointItem.id), func.coalesce(func.sum(CheckpointItem.stored_bytes), 0))
    if project is not None:
        query = query.where(CheckpointItem.project_id == project)
    query = query.where(CheckpointItem.status == status) if status else query.where(
        CheckpointItem.status != "deleted")
    n, b = session.execute(query).one()
    return int(n), int(b)


def _assert_exact(runtime, projects=("a", "b", "c")) -> None:
    with runtime.sessions() as session:
        for project in (*projects, None):
            for status in (None, *STATUSES):
                want = _truth(session, project, status)
                got = tally(session, project, status=status, exclude_status=None if status else "deleted")
                assert got == want, (project, status, got, want)
                assert count_items(runtime, project or "a", ItemQuery(status=status, all_tenants=project is None)) \
                    == want[0]
        for project in projects:
            usage = quota_usage(session, runtime, project)
            assert (usage.backups_used, usage.used_bytes) == _truth(session, project, None)


def test_counts_follow_every_change_of_the_backups(runtime):
    cps, items = _rows("a", 40)
    cps2, items2 = _rows("b", 25, start=40)
    with transaction(runtime.sessions) as session:  # bulk: one statement for many rows
        session.execute(Checkpoint.__table__.insert(), cps + cps2)
        session.execute(CheckpointItem.__table__.insert(), items + items2)
    _assert_exact(runtime)
    one_cp, one = _rows("c", 1, start=100)
    with transaction(runtime.sessions) as session:  # one by one, as the API creates them
        session.add(Checkpoint(**one_cp[0]))
        session.flush()
        session.add(CheckpointItem(**one[0]))
    _assert_exact(runtime)
    with transaction(runtime.sessions) as session:  # a backup finishing, another failing, one deleted
        session.execute(update(CheckpointItem).where(CheckpointItem.id == items[0]["id"])
                        .values(status="available", stored_bytes=5_000_000))
        session.execute(update(CheckpointItem).where(CheckpointItem.id == items[4]["id"]).values(status="error"))
        session.execute(update(CheckpointItem).where(CheckpointItem.project_id == "b",
                                                     CheckpointItem.status == "available")
                        .values(status="deleted"))
        session.execute(update(CheckpointItem).where(CheckpointItem.id == items[8]["id"]).values(progress=50))
    _assert_exact(runtime)
    with transaction(runtime.sessions) as session:  # moved to another project; removed directly and by cascade
        session.execute(update(CheckpointItem).where(CheckpointItem.id == items[1]["id"]).values(project_id="c"))
        session.execute(delete(CheckpointItem).where(CheckpointItem.id == items[2]["id"]))
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_([c["id"] for c in cps[10:20]])))
    _assert_exact(runtime)
    with runtime.sessions() as session:
        rows_before = session.scalar(select(func.count()).select_from(CheckpointItemTally))
    with transaction(runtime.sessions) as session:
        folded = compact(session, above=2)
    with runtime.sessions() as session:
        rows_after = session.scalar(select(func.count()).select_from(CheckpointItemTally))
        per_project = dict(session.execute(select(CheckpointItemTally.project_id, func.count())
                                           .group_by(CheckpointItemTally.project_id)).all())
    assert folded > 0 and rows_after == rows_before - folded, (rows_before, rows_after, folded)
    assert all(n <= len(STATUSES) for n in per_project.values()), per_project
    _assert_exact(runtime)
    with transaction(runtime.sessions) as session:  # folding again changes nothing; changes after it still count
        assert compact(session, above=len(STATUSES)) == 0
        session.execute(update(CheckpointItem).where(CheckpointItem.project_id == "a").values(status="deleted"))
    _assert_exact(runtime)


def test_the_api_count_and_quotas_read_the_tallies(demo, runtime):
    client, headers = demo
    cps, items = _rows("demo", 30)
    with transaction(runtime.sessions) as session:
        session.execute(Checkpoint.__table__.insert(), cps)
        session.execute(CheckpointItem.__table__.insert(), items)
    r = client.get("/v1/demo/checkpoint_items/count", headers=headers)
    assert r.status_code == 200 and r.json() == {"count": 23}, r.text  # every 4th is deleted
    r = client.get("/v1/demo/checkpoint_items/count", params={"status": "error"}, headers=headers)
    assert r.json() == {"count": 7}
    r = client.get("/v1/demo/checkpoint_items", params={"status": "error"}, headers=headers)
    assert len(r.json()["checkpoint_items"]) == 7
    quotas = client.get("/v1/demo/quotas", headers=headers).json()["quotas"]["resources"]
    backups = next(q for q in quotas if q["type"] == "backups")
    assert backups["used"] == 23


@pytest.fixture
def empty_database_url(tmp_path) -> Iterator[str]:
    """An empty database (no tables) of the kind OPENCSBS_TEST_DB selects."""
    if not USE_PG:
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"opencsbs_t_{uuid.uuid4().hex[:12]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    yield _pg_url(name)
    _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.database
def test_an_upgraded_database_starts_from_the_backups_it_holds(empty_database_url):
    url = empty_database_url
    upgrade(url, "0010")
    cps, items = _rows("old", 12)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(Checkpoint.__table__.insert(), cps)
            conn.execute(CheckpointItem.__table__.insert(), items)
        upgrade(url)
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            else:
                sql = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            assert set(TRIGGERS) <= {r[0] for r in conn.exec_driver_sql(sql)}
            conn.execute(update(CheckpointItem).where(CheckpointItem.name == "bk_0").values(status="error"))
        with Session(engine) as session:
            assert tally(session, "old", exclude_status="deleted") == _truth(session, "old", None)
            assert tally(session, "old", status="error") == _truth(session, "old", "error") == (4, 4018)
            assert _truth(session, "old", None)[0] == 9
        with engine.begin() as conn:  # and back: the triggers go with their table
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0010")
        with engine.begin() as conn:
            conn.execute(update(CheckpointItem).where(CheckpointItem.name == "bk_1").values(status="error"))
    finally:
        engine.dispose()
