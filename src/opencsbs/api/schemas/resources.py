"""Wire models of the resource actions (resource_management/*.rst)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from opencsbs.api.schemas.common import WireModel


class ProtectableParam(WireModel):
    """One item of ``check_protectable``: the resource to check."""

    resource_id: str = Field(min_length=1, max_length=64, description="ID of the server")
    resource_type: str = Field(min_length=1, max_length=64, description="e.g. OS::Nova::Server")


class ResourceActionRequest(WireModel):
    """Body of ``POST /v1/{project_id}/providers/{provider_id}/resources/action``."""

    check_protectable: list[ProtectableParam] = Field(
        min_length=1, description="Resources whose backup capability to check (at most ``batch_limit``)"
    )


class CheckResp(BaseModel):
    """One verdict (``check_resp``); ``error_code``/``error_msg`` only when there is something to report."""

    resource_id: str
    resource_type: str
    result: bool
    error_code: str = Field(default=None, description="CSBS.6xxx; absent when there is nothing to report")
    error_msg: str = Field(default=None, description="Filled-in message of error_code; absent with it")


class ProtectableResponse(BaseModel):
    """``{"protectable": [check_resp, ...]}`` in request order."""

    protectable: list[CheckResp]
