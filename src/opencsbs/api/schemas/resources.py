"""Wire models of the resource actions (resource_management/*.rst)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from opencsbs.api.schemas.common import WireModel


class ProtectableParam(WireModel):
    """One item of ``check_protectable``: the resource to check."""

    resource_id: str = Field(min_length=1, max_length=64, description="ID of the server")
    resource_type: str = Field(min_length=1, max_length=64, description="e.g. OS::Nova::Server")


class RestoreVolumeMapping(WireModel):
    """``restore_volume_mapping``: disk backup id → target disk id."""

    backup_id: str = Field(min_length=1, max_length=64)
    volume_id: str = Field(min_length=1, max_length=64)


class RestorableTarget(WireModel):
    """``restorable_target``: the server to restore onto and the disk mapping."""

    resource_id: str = Field(min_length=1, max_length=64)
    resource_type: str = Field(min_length=1, max_length=64)
    volumes: list[RestoreVolumeMapping] = Field(min_length=1)


class RestorableParam(WireModel):
    """One item of ``check_restorable``."""

    checkpoint_item_id: str = Field(min_length=1, max_length=64)
    target: RestorableTarget


class ResourceActionRequest(WireModel):
    """Body of ``POST /v1/{project_id}/providers/{provider_id}/resources/action``: exactly one of
    ``check_protectable`` or ``check_restorable``."""

    check_protectable: list[ProtectableParam] | None = Field(
        default=None, min_length=1, description="Resources whose backup capability to check"
    )
    check_restorable: list[RestorableParam] | None = Field(
        default=None, min_length=1, description="Backups and targets whose restore capability to check"
    )


class CheckResp(BaseModel):
    """One verdict (``check_resp``); ``error_code``/``error_msg`` only when there is something to report."""

    resource_id: str
    resource_type: str
    result: bool
    error_code: str | None = None
    error_msg: str | None = None


class ProtectableResponse(BaseModel):
    """``{"protectable": [check_resp, ...]}`` (or ``{"restorable": [...]}``) in request order."""

    protectable: list[CheckResp] | None = None
    restorable: list[CheckResp] | None = None
