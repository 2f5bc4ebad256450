"""Refusing NUL characters in requests.

No CSBS field (ids, names, descriptions, tags, times) may hold U+0000, and PostgreSQL cannot even compare a text
column with a string holding one (the driver raises before the query runs). :class:`NoNul` answers such a request
with 400 CSBS.9001 before any route sees it, on every database alike: a NUL in the path (``%00``), in the query
string, or in a string (key or value) of a JSON body (``"\\u0000"``).
"""

from __future__ import annotations

import json

from opencsbs.core import codes


def holds_nul(value) -> bool:
    """Whether a parsed JSON value has U+0000 in any string, object key included."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def body_holds_nul(body: bytes) -> bool:
    """Whether a JSON request body has U+0000 in one of its strings. A body that is not JSON is left to the
    route's own validation (it answers 400 "not valid JSON")."""
    if b"\\u0000" not in body:  # JSON can only carry U+0000 escaped; a raw NUL byte makes the body invalid JSON
        return False
    try:
        return holds_nul(json.loads(body))
    except ValueError:
        return False


class NoNul:
    """ASGI middleware: 400 CSBS.9001 for a request with a NUL character in its path, query or JSON body.

    The body is read whole here (an outer :class:`opencsbs.api.app.BodyLimit` bounds it) and handed on unchanged.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        query = scope.get("query_string") or b""
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            return await self._refuse(send, "the URL holds a NUL character")
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
        if body_holds_nul(b"".join(chunks)):
            return await self._refuse(send, "the request body holds a NUL character")
        pending = iter(messages)

        async def replay():
            message = next(pending, None)
            return message if message is not None else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, why: str):
        body = json.dumps({"error_code": codes.INVALID_PARAMETER.code,
                           "error_msg": f"Invalid request parameters: {why}"}).encode()
        await send({"type": "http.response.start", "status": codes.INVALID_PARAMETER.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
