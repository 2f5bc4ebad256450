"""Database errors in one line an operator can act on (what failed, where, why), never a SQLAlchemy traceback.

``describe(exc, url)`` turns the exceptions SQLAlchemy raises when it cannot reach or even address a database
(``OperationalError`` when connecting, ``ArgumentError`` for a URL it cannot parse, ``NoSuchModuleError`` for an
unknown dialect, ``ImportError`` for a dialect whose DB-API driver is not installed) into such a line; the URL is
shown without its password.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


def where(url: str) -> str:
    """``host:port/database`` of ``url`` (the SQLite file for SQLite), without user or password; ``url`` itself,
    password stripped, when SQLAlchemy cannot parse it."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as typed, minus anything like a password
        return _strip_password(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "an in-memory SQLite database"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{host}{port}/{parsed.database or ''}"


def _strip_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def _reason(orig: BaseException | None, fallback: BaseException) -> str:
    """The last meaningful line of a DB-API error (libpq puts the server's answer last, after
    ``connection to server at ... failed:``)."""
    text = str(orig if orig is not None else fallback).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(orig or fallback).__name__
    reason = lines[0]
    for marker in ("FATAL:", "failed:"):
        if marker in reason:
            reason = reason.rsplit(marker, 1)[1].strip()
    if reason.startswith("connection failed:"):
        reason = reason[len("connection failed:"):].strip()
    return reason or lines[0]


def describe(exc: BaseException, url: str) -> str | None:
    """One line for a database error of ``url`` (``None`` when ``exc`` is no such error):

    - ``cannot connect to the database at 127.0.0.1:5432/x: database "x" does not exist``
    - ``invalid database URL 'not a url': ...`` (``ArgumentError``)
    - ``database URL mysql://x@h/x: the driver for mysql is not installed (No module named 'MySQLdb')``
    """
    if isinstance(exc, sa_exc.OperationalError):
        return f"cannot connect to the database at {where(url)}: {_reason(exc.orig, exc)}"
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return f"database URL {_strip_password(url)}: unknown database kind ({exc}); use sqlite:/// or postgresql://"
    if isinstance(exc, sa_exc.ArgumentError):
        return f"invalid database URL {_strip_password(url)!r}: {exc} (e.g. postgresql://user@host:5432/opencsbs)"
    if isinstance(exc, ImportError):
        return (f"database URL {_strip_password(url)}: its driver is not installed ({exc}); opencsbs supports "
                f"sqlite:/// and postgresql:// (psycopg)")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return f"lost the connection to the database at {where(url)}: {_reason(exc.orig, exc)}"
    return None
