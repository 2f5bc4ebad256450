"""The migration chain: one head, and it upgrades an empty database on SQLite and PostgreSQL."""

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from opencsbs.db.base import Base, make_engine
from opencsbs.db.migrate import alembic_config


def test_single_head():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, script.get_heads()


def test_upgrade_creates_every_table(database_url):
    engine = make_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
