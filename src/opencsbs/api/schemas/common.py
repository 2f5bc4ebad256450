"""Shared wire pieces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    """``{"error_code": "CSBS.xxxx", "error_msg": "..."}`` (appendixes/error_codes.rst)."""

    error_code: str
    error_msg: str


class WireModel(BaseModel):
    """Base of request models: strict JSON types (no silent coercion of ``1`` into ``"1"``)."""

    model_config = ConfigDict(strict=True, extra="ignore")


#: upper bound of integer query parameters (limit, offset): what every database's integer columns can hold
MAX_QUERY_INT = 2**31 - 1

#: ``responses=`` entry documenting the error body on the usual statuses.
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 500, 503)}
