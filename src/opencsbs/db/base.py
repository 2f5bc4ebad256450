"""Engine and session factory for SQLite (embedded default) and PostgreSQL.

``make_engine(url)`` returns an engine tuned per dialect: SQLite gets WAL, foreign keys and a busy timeout so
the API threads, workers and CLI can share one file; PostgreSQL gets a connection pool with pre-ping.
"""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from collections.abc import Iterator, Sequence

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every opencsbs table (constraint names are deterministic for Alembic)."""

    metadata = MetaData(naming_convention=NAMING)


def new_id() -> str:
    """A new resource id: a UUID4 string (the form every CSBS id takes)."""
    return str(uuid.uuid4())


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def in_ids(column, ids, dialect: str):
    """``column IN (ids)`` with the ids as ONE bound JSON array: SQLite ``json_each``, PostgreSQL
    ``json_array_elements_text``; other dialects get a plain expanding IN. A 1,000-id batch is then one short,
    cached statement instead of 1,000 bind parameters (and no per-database parameter limit applies).

    ``ids``: a sequence of strings, or a bind parameter that will carry ``json.dumps(ids)`` (for
    :class:`RawQuery`, where the statement is compiled once).
    """
    from sqlalchemy import JSON, cast, func, literal, literal_column, select
    from sqlalchemy.sql.elements import BindParameter

    payload = ids if isinstance(ids, BindParameter) else literal(json.dumps(list(ids)))
    if dialect == "sqlite":
        return column.in_(select(literal_column("value")).select_from(func.json_each(payload)))
    if dialect == "postgresql":
        return column.in_(select(func.json_array_elements_text(cast(payload, JSON))))
    if isinstance(ids, BindParameter):
        raise ValueError(f"in_ids with a bind parameter needs SQLite or PostgreSQL, not {dialect}")
    return column.in_(list(ids))


def dialect_of(session) -> str:
    """The dialect name (``"sqlite"``, ``"postgresql"``) of the database ``session`` talks to, for :func:`in_ids`."""
    return session.get_bind().dialect.name


class RawQuery:
    """A fixed SELECT run straight on the DB-API cursor of a SQLAlchemy connection: built and compiled once per
    dialect by ``build(dialect_name)``, rows returned as plain tuples without SQLAlchemy's result processing.

    For hot read paths only (check_protectable's batch facts). Values arrive as the driver gives them: SQLite
    returns booleans as 0/1 and JSON columns as text, psycopg returns ``bool`` and parsed JSON; callers convert.
    """

    def __init__(self, build):
        self.build = build
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def rows(self, conn, **params) -> list[tuple]:
        """Execute with named ``params`` on ``conn`` (a SQLAlchemy ``Connection``, inside its transaction)."""
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = self.build(dialect.name).compile(dialect=dialect)
            order = tuple(statement.positiontup) if dialect.positional else None
            compiled = self._compiled[dialect.name] = (str(statement), order)
        sql, order = compiled
        args = tuple(params[name] for name in order) if order is not None else params
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(sql, args)
            return cursor.fetchall()
        finally:
            cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


#: PostgreSQL advisory-lock namespaces (first key of ``pg_advisory_xact_lock(int4, int4)``) per purpose.
PROJECT_LOCKS = {"backup_quota": 0x43534201, "policy_quota": 0x43534202}


def lock_project(session: Session, project_id: str, purpose: str) -> None:
    """Serialise, per project and ``purpose`` (a key of :data:`PROJECT_LOCKS`), the rest of ``session``'s
    transaction with every other transaction that took the same lock: a quota check and the insert it guards
    then act as one step (no two concurrent creates can both pass the check on the same counts).

    PostgreSQL: ``pg_advisory_xact_lock(namespace, hashtext(project_id))``, held until commit/rollback; READ
    COMMITTED statements after it see every transaction that held it before. SQLite: ``BEGIN IMMEDIATE`` takes
    the database's write lock now (waiting up to the busy timeout), so the reads that follow see the newest
    data and no other writer commits until this transaction ends. On SQLite this must be the first statement
    of the transaction (raises RuntimeError otherwise).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy import func, select

        session.execute(select(func.pg_advisory_xact_lock(PROJECT_LOCKS[purpose], func.hashtext(project_id))))
    elif dialect == "sqlite":
        conn = session.connection()
        if conn.connection.dbapi_connection.in_transaction:
            raise RuntimeError("lock_project must start its transaction on SQLite")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"lock_project: unsupported database {dialect}")
