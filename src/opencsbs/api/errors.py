"""Error mapping: every failure leaves as ``{"error_code": ..., "error_msg": ...}`` with a JSON content type.

- :class:`CSBSError` → its own status and code;
- request validation (malformed JSON, wrong types, missing fields) → 400 CSBS.9001 naming the field, but only
  once the caller is known: on a project's route a bad token still answers 401 and a foreign project 403 first;
- unknown route → 404 APIGW.0101, wrong method → 405 APIGW.0101 (``docs/errors.md``);
- other HTTP errors raised by the framework (a body that is not UTF-8, ...) → CSBS.9001 with their status;
- anything else → 500 CSBS.9999 (a real server fault; logged with its traceback, never shown to the client).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from opencsbs.core import codes
from opencsbs.core.errors import INVALID_PREFIX, CSBSError, invalid

log = logging.getLogger("opencsbs.api")
#: the methods a 405's ``Allow`` may list (HEAD follows GET)
CANDIDATE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def error_response(error: CSBSError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON response for ``error``."""
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    """A one-line account of what was wrong with the request, naming each field."""
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "request body"
        if err.get("type") == "json_invalid":
            parts.append("request body is not valid JSON")
            continue
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return INVALID_PREFIX + "; ".join(parts)


def auth_denial(request: Request) -> CSBSError | None:
    """The 401/403 a project-scoped request would get, or None. FastAPI parses the body before it runs the
    auth dependencies; this keeps "who are you" ahead of "what did you send" for malformed bodies."""
    project_id = (request.scope.get("path_params") or {}).get("project_id")
    runtime = getattr(request.app.state, "runtime", None)
    if project_id is None or runtime is None:
        return None
    from opencsbs.auth.base import Forbidden

    try:
        principal = runtime.authenticator.authenticate(request.headers.get("x-auth-token"))
    except CSBSError as exc:
        return exc
    if not runtime.enforcer.may_act_on(principal, project_id):
        return Forbidden("the token is not scoped to this project")
    return None


def allowed_methods(request: Request, given: list[str]) -> list[str]:
    """Every method the request's path serves, for a 405's ``Allow``: the union over all routes matching the path
    (Starlette names only the first route's), plus ``HEAD`` wherever ``GET`` is (``api.app.HeadAsGet``)."""
    methods = set(given)
    for method in CANDIDATE_METHODS:  # ask the routes themselves (included routers nest them)
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""

    @app.exception_handler(CSBSError)
    async def _csbs(_request: Request, exc: CSBSError) -> JSONResponse:
        headers = {"WWW-Authenticate": "X-Auth-Token"} if exc.status == 401 else None
        return error_response(exc, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        denied = auth_denial(request)
        if denied is not None:
            return await _csbs(request, denied)
        return error_response(CSBSError(codes.INVALID_PARAMETER, describe_validation(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(CSBSError(codes.ROUTE_NOT_FOUND))
        if exc.status_code == 405:
            headers = dict(exc.headers or {})
            given = [m.strip() for m in headers.get("Allow", "").split(",") if m.strip()]
            headers["Allow"] = ", ".join(allowed_methods(request, given))
            method = request.scope.get("opencsbs.method", request.method)
            return error_response(CSBSError(codes.METHOD_NOT_ALLOWED, method), headers)
        if exc.status_code == 401:
            return error_response(CSBSError(codes.AUTH_FAILED, "token missing or invalid"),
                                  {"WWW-Authenticate": "X-Auth-Token"})
        if exc.status_code == 403:
            return error_response(CSBSError(codes.FORBIDDEN, "not allowed"))
        if exc.status_code == 413:
            return error_response(CSBSError(codes.REQUEST_TOO_LARGE, "request body"))
        if exc.status_code < 500:
            # e.g. a body that is not UTF-8 / not JSON ("There was an error parsing the body"): the client's mistake
            detail = "request body is not valid JSON" if exc.status_code == 400 else str(exc.detail)
            return error_response(invalid(detail, status=exc.status_code), exc.headers)
        log.error("HTTP %s raised on %s %s", exc.status_code, request.method, request.url.path)
        return error_response(CSBSError(codes.INTERNAL_ERROR, "request", status=exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(CSBSError(codes.INTERNAL_ERROR, "request"))
