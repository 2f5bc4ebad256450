"""The ASGI application: ``create_app(runtime)``.

Routers are mounted from ``opencsbs.api.routes``; errors leave as CSBS JSON bodies (``api.errors``); request
bodies over ``max_body_bytes`` are refused with 413 before they are read whole, bodies slower than
``body_timeout`` with 408; a request body is read as JSON whatever its declared ``Content-Type``
(:class:`JsonBody`); ``HEAD`` works on every ``GET`` route (:class:`HeadAsGet`); ``/openapi.json`` lists exactly the statuses and bodies the server sends
(:func:`wire_openapi`).
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI

from opencsbs import __version__
from opencsbs.api.console import mount_console
from opencsbs.api.errors import install_error_handlers
from opencsbs.api.faults import FaultBarrier
from opencsbs.api.health import router as health_router
from opencsbs.api.input_guard import InputGuard
from opencsbs.api.metrics import router as metrics_router
from opencsbs.api.observe import Observe, RouteMark
from opencsbs.api.routes import backups, extensions, locks, policies, providers, resources, restores, tags, versions
from opencsbs.api.routes import replication as replication_routes
from opencsbs.api.routes import verify as verify_routes
from opencsbs.api.routes import cancels
from opencsbs.api.routes import workers as workers_routes
from opencsbs.api.routes import retention as retention_routes
from opencsbs.api.schemas.common import ErrorBody
from opencsbs.core import codes
from opencsbs.runtime import Runtime

ROUTERS = [versions.router, providers.router, resources.router, backups.router, restores.router, policies.router,
           tags.router, extensions.router, locks.router, replication_routes.router, verify_routes.router,
           health_router, metrics_router, cancels.router, workers_routes.router, retention_routes.router]


class BodyLimit:
    """ASGI middleware bounding request bodies in size and time.

    - over ``limit`` bytes (declared in ``Content-Length`` or counted while streaming): 413 APIGW.0201;
    - not received whole within ``timeout`` seconds of the first read: 408 APIGW.0201, so a client trickling a
      body cannot hold a request open for ever (other tenants are not stalled either way: bodies are read on the
      event loop, not in a worker thread).

    The refusal is sent from here; whatever the application answers to the aborted read is dropped.
    """

    def __init__(self, app, limit: int, timeout: float | None = None):
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, codes.REQUEST_TOO_LARGE, f"more than {self.limit} bytes")
        seen = 0
        started = False
        refused = False
        deadline = None

        async def refuse(code, why):
            nonlocal refused
            if not started and not refused:
                refused = True
                await self._refuse(send, code, why)
            raise _Refused()

        async def limited_receive():
            nonlocal seen, deadline
            if self.timeout is None:
                message = await receive()
            else:
                loop = asyncio.get_running_loop()
                if deadline is None:
                    deadline = loop.time() + self.timeout
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    await refuse(codes.REQUEST_TIMEOUT, f"request body not received within {self.timeout:g} s")
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    await refuse(codes.REQUEST_TOO_LARGE, f"more than {self.limit} bytes")
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _Refused:
            pass

    @staticmethod
    async def _refuse(send, code: codes.Code, why: str):
        body = json.dumps({"error_code": code.code, "error_msg": code.format(why)}).encode()
        await send({"type": "http.response.start", "status": code.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _Refused(Exception):
    pass


class JsonBody:
    """ASGI middleware: every request body is JSON, whatever ``Content-Type`` says.

    The CSBS API only takes JSON bodies. ``curl -d '{...}'`` without ``-H 'Content-Type: application/json'``
    sends ``application/x-www-form-urlencoded``, other clients send ``text/plain`` or nothing; the caller still
    means JSON, so such a body is parsed as JSON (and refused with 400 CSBS.9001 if it is not). Only
    ``multipart/form-data`` bodies (which cannot be JSON) are left as they are, and are refused by validation.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            declared = next((v for k, v in scope.get("headers") or [] if k == b"content-type"), b"")
            media = declared.split(b";", 1)[0].strip().lower()
            if not (media.endswith(b"/json") or media.endswith(b"+json") or media.startswith(b"multipart/")):
                scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        await self.app(scope, receive, send)


class TrailingSlash:
    """ASGI middleware: ``/v1/{project_id}/policies/`` is served as ``/v1/{project_id}/policies``.

    Clients build URLs by joining an endpoint and a path, and some leave a trailing slash; the CSBS routes have
    none. Without this, the framework would answer a 307 redirect with an empty body (which clients do not all
    follow for POST/PUT); with it, both spellings reach the same route.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            if len(path) > 1 and path.endswith("/"):
                stripped = path.rstrip("/") or "/"
                raw = scope.get("raw_path")
                scope = dict(scope, path=stripped)
                if raw:
                    scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


class HeadAsGet:
    """ASGI middleware: ``HEAD`` is answered on every ``GET`` route (RFC 9110 section 9.3.2): the request is
    served as a ``GET`` (same authentication, status and headers, ``Content-Length`` included) and the body is
    dropped. On a path without ``GET`` it answers 405 like any other method the path lacks; the original method
    stays in ``scope["opencsbs.method"]`` for the error message.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)
        scope = dict(scope, method="GET")
        scope["opencsbs.method"] = "HEAD"

        async def bodiless_send(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, bodiless_send)


def wire_openapi(app: FastAPI) -> dict:
    """The OpenAPI document of what the server really does: FastAPI's, without the 422 responses it never
    sends (validation failures are 400 CSBS.9001), with 413 where a body is taken and 400 wherever input is
    read, all in the CSBS error shape. (405 for a method a path does not have, and 404 for an unknown path,
    cannot be tied to an operation: docs/errors.md lists them.)"""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    error_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if "requestBody" in operation:
                responses["413"] = {"description": "Request Entity Too Large", **error_ref}
            if "400" not in responses and ("requestBody" in operation or operation.get("parameters")):
                responses["400"] = {"description": "Bad Request", **error_ref}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    app.openapi_schema = schema
    return schema


def create_app(runtime: Runtime) -> FastAPI:
    """The CSBS v1 API bound to ``runtime``."""
    app = FastAPI(
        title="opencsbs",
        version=__version__,
        description="Cloud Server Backup Service (CSBS) v1 API, wire-compatible with the public reference.",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    mount_console(app)
    app.add_middleware(RouteMark)  # innermost: sees the route the router chose
    app.add_middleware(JsonBody)
    app.add_middleware(TrailingSlash)
    app.add_middleware(InputGuard)
    app.add_middleware(BodyLimit, limit=runtime.settings.max_body_bytes, timeout=runtime.settings.body_timeout)
    app.add_middleware(HeadAsGet)
    app.add_middleware(FaultBarrier)  # just inside Starlette's ServerErrorMiddleware
    app.add_middleware(Observe)  # outermost of ours: request id, log context, request metrics
    app.openapi = lambda: wire_openapi(app)
    return app
