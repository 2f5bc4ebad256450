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


def test_the_models_match_the_migrations(database_url):
    """Alembic autogenerate finds nothing to change: every model, the sandbox cloud's tables included (they live
    in ``clouds/sandbox/models.py`` on the same ``Base``), matches what the migration chain built."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import opencsbs.clouds.sandbox.models  # noqa: F401 - as db/migrations/env.py does
    import opencsbs.db.models  # noqa: F401

    assert {"sandbox_servers", "sandbox_volumes", "sandbox_attachments"} <= set(Base.metadata.tables)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"render_as_batch": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
