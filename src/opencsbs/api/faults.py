"""The last line of the API: an exception no handler answered becomes one JSON error, and the connection lives on.

Starlette's own catch-all (``ServerErrorMiddleware``) sends the 500 and then re-raises the exception to the
server, which makes uvicorn drop the keep-alive connection: a pooled client's *next* request on it then fails
with no answer. :class:`FaultBarrier` sits just inside that middleware and answers instead, without re-raising,
so the connection stays usable. When the response had already started, nothing more can be said on it: the
exception is re-raised and the server closes the connection (the client sees a truncated answer, as it must).

:func:`fault_error` names what failed: a full disk (``ENOSPC``/``EDQUOT``) or a full database (SQLite
``SQLITE_FULL`` "database or disk is full", PostgreSQL SQLSTATE 53100 ``disk_full``) answers 503 CSBS.9999
"request failed: ... is full"; anything else 500 CSBS.9999 "request failed".
"""

from __future__ import annotations

import errno
import logging

from opencsbs.api.errors import error_response
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError

log = logging.getLogger("opencsbs.api")

#: errno values meaning "no room left" (disk full, quota exhausted)
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: PostgreSQL SQLSTATEs meaning the database cannot grow (53100 disk_full)
FULL_SQLSTATES = frozenset({"53100"})


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__


def fault_error(exc: BaseException) -> CSBSError:
    """The client-visible error for an unexpected exception (see the module docstring)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
            return CSBSError(codes.STORAGE_FULL, "request", "the server's disk (no space left on device)")
        sqlstate = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if sqlstate in FULL_SQLSTATES:
            return CSBSError(codes.STORAGE_FULL, "request", "the database's disk")
        if type(e).__module__.startswith("sqlite3") and "database or disk is full" in str(e):
            return CSBSError(codes.STORAGE_FULL, "request", "the database (or its disk)")
    return CSBSError(codes.INTERNAL_ERROR, "request")


class FaultBarrier:
    """ASGI middleware: answer an unhandled exception with the JSON error of :func:`fault_error`, once, and keep
    the connection (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the barrier: every fault becomes an answer
            if started:
                raise
            error = fault_error(exc)
            log.error("unexpected error on %s %s: %s", scope.get("method"), scope.get("path"), error.error_msg,
                      exc_info=exc)
            await error_response(error)(scope, receive, send)
