"""Run the Alembic migrations programmatically (``opencsbs db upgrade``; ``serve`` does it at start-up).

``upgrade(url)`` brings the database at ``url`` to the newest revision; safe to call on every start.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for ``url`` pointing at the packaged migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest)."""
    from sqlalchemy import text

    from opencsbs.db.base import make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several processes (serve, workers, schedulers) may start at once: serialise migrations.
                conn.execute(text("SELECT pg_advisory_xact_lock(74657263)"))
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
