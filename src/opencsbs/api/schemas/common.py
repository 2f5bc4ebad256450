"""Shared wire pieces."""

from __future__ import annotations

from pydantic import BaseModel

from opencsbs.wire import WireModel  # noqa: F401 (the request models' base, shared with the CLI)


class ErrorBody(BaseModel):
    """``{"error_code": "CSBS.xxxx", "error_msg": "..."}`` (appendixes/error_codes.rst)."""

    error_code: str
    error_msg: str


#: upper bound of integer query parameters (limit, offset): what every database's integer columns can hold
MAX_QUERY_INT = 2**31 - 1

#: ``responses=`` entry documenting the error body on the usual statuses.
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 500, 503)}
