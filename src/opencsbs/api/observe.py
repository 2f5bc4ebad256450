"""ASGI middleware that lets an operator see what the API does, without changing any CSBS body:

- :class:`Observe` (outermost): gives each request an id (``req-<uuid>``; a well-formed ``X-Openstack-Request-Id``
  sent by the client is kept), sets :data:`opencsbs.logs.request_id` so every log line of the request carries
  it, sends it back in the ``X-Openstack-Request-Id`` response header (as OpenStack services do), and counts the
  request in the metrics (:func:`opencsbs.api.metrics.observe_request`) by method, route template and status,
  with its latency in seconds.
- :class:`RouteMark` (innermost): tells :class:`Observe` which route template served the request (the router
  records it in the scope the innermost middleware sees; outer middlewares see copies).
"""

from __future__ import annotations

import re
import time
import uuid

from opencsbs import logs
from opencsbs.api.metrics import observe_request

#: response header carrying the request id
HEADER = b"x-openstack-request-id"
_WELL_FORMED = re.compile(rb"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SLOT = "opencsbs.observe"


class _Seen:
    __slots__ = ("route",)

    def __init__(self):
        self.route = "unmatched"


class Observe:
    """Request id, log context and request metrics (see the module docstring)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope.get("headers") or [] if k == HEADER), b"")
        rid = given.decode() if _WELL_FORMED.match(given) else f"req-{uuid.uuid4()}"
        seen = _Seen()
        scope[_SLOT] = seen
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            observe_request(scope["method"], seen.route, status, time.perf_counter() - started)
            logs.request_id.reset(token)


class RouteMark:
    """Records the template of the route that served the request for :class:`Observe`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            await self.app(scope, receive, send)
        finally:
            seen = scope.get(_SLOT)
            route = scope.get("route")
            if seen is not None and route is not None:
                seen.route = getattr(route, "path", None) or seen.route
