"""Refusing requests no CSBS call can mean, before any route runs (so nothing is half-written).

- A NUL character: no CSBS field (ids, names, descriptions, tags, times) may hold U+0000, and PostgreSQL cannot
  even compare a text column with a string holding one (the driver raises before the query runs). Refused in the
  path (``%00``), the query string, or a string (key or value) of a JSON body (``"\\u0000"``).
- A JSON body nested deeper than :data:`MAX_JSON_DEPTH`: the deepest reference body (a policy: policy /
  scheduled_operations / [] / trigger / properties) has 5 levels; free-form dicts (``extra_info``,
  ``parameters``) nested hundreds deep were accepted, stored, and then could not be serialized back (a 500 after
  the backup had started).

Both answer 400 CSBS.9001 ``Invalid request parameters: ...`` on every database alike, but only once the caller
is known, as for any other bad input (``api.errors``): on a project's route a bad token still answers 401 and a
token of another project 403 first.
"""

from __future__ import annotations

import json
import re

from starlette.requests import Request

from opencsbs.api.errors import auth_denial
from opencsbs.core import codes
from opencsbs.core.errors import INVALID_PREFIX

PROJECT_ROUTE = re.compile(r"^/v1/([^/]+)/")

MAX_JSON_DEPTH = 32


def holds_nul(value) -> bool:
    """Whether a parsed JSON value has U+0000 in any string, object key included."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def deeper_than(value, levels: int) -> bool:
    """Whether a parsed JSON value nests more than ``levels`` objects/arrays (a scalar nests 0, ``{}`` and
    ``[1]`` nest 1). Stops descending once ``levels`` is exceeded."""
    if type(value) is not dict and type(value) is not list:
        return False
    if levels == 0:
        return True
    for child in value.values() if type(value) is dict else value:
        if (type(child) is dict or type(child) is list) and deeper_than(child, levels - 1):
            return True
    return False


def body_problem(body: bytes) -> str | None:
    """Why a JSON request body is refused here, or None. A body that is not JSON is left to the route's own
    validation (it answers 400 "not valid JSON")."""
    nul = b"\\u0000" in body  # JSON carries U+0000 only escaped; a raw NUL byte makes the body invalid JSON
    # fewer containers than the limit cannot nest deeper than it: most bodies are not parsed twice
    deep = body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH
    if not (nul or deep):
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if deep and deeper_than(parsed, MAX_JSON_DEPTH):
        return f"the request body nests objects/arrays deeper than {MAX_JSON_DEPTH} levels"
    if nul and holds_nul(parsed):
        return "the request body holds a NUL character"
    return None


class InputGuard:
    """ASGI middleware: 400 CSBS.9001 for a NUL character in the path, query or JSON body, or a JSON body nested
    deeper than :data:`MAX_JSON_DEPTH`.

    The body is read whole here (an outer :class:`opencsbs.api.app.BodyLimit` bounds it) and handed on unchanged.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        query = scope.get("query_string") or b""
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            return await self._refuse(scope, send, "the URL holds a NUL character")
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.app(scope, receive, send)
        messages, chunks = [], []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        problem = body_problem(b"".join(chunks))
        if problem is not None:
            return await self._refuse(scope, send, problem)
        pending = iter(messages)

        async def replay():
            message = next(pending, None)
            return message if message is not None else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, send, why: str):
        status, headers = codes.INVALID_PARAMETER.status, []
        answer = {"error_code": codes.INVALID_PARAMETER.code, "error_msg": INVALID_PREFIX + why}
        project = PROJECT_ROUTE.match(scope.get("path", ""))
        if project is not None and "app" in scope:
            denied = auth_denial(Request(dict(scope, path_params={"project_id": project.group(1)})))
            if denied is not None:
                status, answer = denied.status, denied.body()
                if status == 401:
                    headers = [(b"www-authenticate", b"X-Auth-Token")]
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *headers]})
        await send({"type": "http.response.body", "body": body})
