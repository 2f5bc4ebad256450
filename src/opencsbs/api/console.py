"""The web console: static files of ``opencsbs/console`` (package data) served at ``/console/``.

No build step and no other server: the HTML, CSS and ES modules are shipped in the package and served by the
same process as the API, which the console calls with the user's token like any other client (docs/console.md).
Every console response carries a Content-Security-Policy allowing requests to this server only.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

ASSETS = Path(str(files("opencsbs") / "console"))
PREFIX = "/console"

#: requests to this origin only; no inline scripts or styles; images may be inline SVG data
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


class _ConsoleFiles(StaticFiles):
    """StaticFiles adding :data:`HEADERS` to every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def index() -> FileResponse:
    """The console's page (``/console`` and ``/console/``; the trailing slash is dropped before routing)."""
    return FileResponse(ASSETS / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


def mount_console(app: FastAPI) -> None:
    """Serve the console under :data:`PREFIX` (left out of ``/openapi.json``: it is not an API)."""
    app.add_api_route(PREFIX, index, methods=["GET"], include_in_schema=False)
    app.mount(PREFIX, _ConsoleFiles(directory=ASSETS, html=False), name="console")
