"""The ASGI application: ``create_app(runtime)``.

Routers are mounted from ``opencsbs.api.routes``; errors leave as CSBS JSON bodies (``api.errors``); request
bodies over ``max_body_bytes`` are refused with 413 before they are read whole.
"""

from __future__ import annotations

import json

from fastapi import FastAPI

from opencsbs import __version__
from opencsbs.api.errors import install_error_handlers
from opencsbs.api.routes import backups, providers, resources, restores, versions
from opencsbs.core import codes
from opencsbs.runtime import Runtime

ROUTERS = [versions.router, providers.router, resources.router, backups.router, restores.router]


class BodyLimit:
    """ASGI middleware: 413 with the JSON error body once a request body passes ``limit`` bytes."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps(
            {"error_code": codes.REQUEST_TOO_LARGE.code,
             "error_msg": codes.REQUEST_TOO_LARGE.format(f"more than {self.limit} bytes")}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(runtime: Runtime) -> FastAPI:
    """The CSBS v1 API bound to ``runtime``."""
    app = FastAPI(
        title="opencsbs",
        version=__version__,
        description="Cloud Server Backup Service (CSBS) v1 API, wire-compatible with the public reference.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes)
    return app
