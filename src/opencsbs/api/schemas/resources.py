"""Wire models of the resource actions (resource_management/*.rst)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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

    # Typed without ``| None``: an explicit ``null`` is refused (400), as the schema below says; absent is None.
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["check_protectable"]}, {"required": ["check_restorable"]}]}
    )

    check_protectable: list[ProtectableParam] = Field(
        default=None, min_length=1,
        description="Resources whose backup capability to check (at most ``batch_limit``)",
    )
    check_restorable: list[RestorableParam] = Field(
        default=None, min_length=1, description="Backups and targets whose restore capability to check"
    )


class CheckResp(BaseModel):
    """One verdict (``check_resp``); ``error_code``/``error_msg`` only when there is something to report."""

    resource_id: str
    resource_type: str
    result: bool
    error_code: str = Field(default=None, description="CSBS.6xxx; absent when there is nothing to report")
    error_msg: str = Field(default=None, description="Filled-in message of error_code; absent with it")


class ProtectableResponse(BaseModel):
    """``{"protectable": [check_resp, ...]}`` (or ``{"restorable": [...]}``) in request order."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["protectable"]}, {"required": ["restorable"]}]}
    )

    protectable: list[CheckResp] = None
    restorable: list[CheckResp] = None
