"""Checks real HTTP exchanges against the server's own ``/openapi.json`` with openapi-core."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    status_code: int
    content_type: str
    headers: Headers
    data: bytes | None


def adapt(response: httpx.Response) -> tuple[_Request, _Response]:
    """openapi-core views of an httpx exchange."""
    req = response.request
    url = urlsplit(str(req.url))
    query = ImmutableMultiDict([(k, v) for k, vs in parse_qs(url.query).items() for v in vs])
    request = _Request(
        host_url=f"{url.scheme}://{url.netloc}",
        path=url.path,
        method=req.method.lower(),
        body=req.content or None,
        content_type=req.headers.get("content-type", "application/json").lower(),
        parameters=RequestParameters(query=query, header=Headers(list(req.headers.items()))),
    )
    resp = _Response(response.status_code, response.headers.get("content-type", "").lower(),
                     Headers(list(response.headers.items())), response.content)
    return request, resp


class Contract:
    """``check(response, request_too=False)``: the response (and optionally the request) conforms to the spec."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.openapi = OpenAPI.from_dict(json.loads(json.dumps(spec)))

    def check(self, response: httpx.Response, request_too: bool = False) -> None:
        request, resp = adapt(response)
        if request_too:
            self.openapi.validate_request(request)
        self.openapi.validate_response(request, resp)
