"""Database adapter: SQLAlchemy models, sessions and Alembic migrations (SQLite embedded, PostgreSQL in production)."""
