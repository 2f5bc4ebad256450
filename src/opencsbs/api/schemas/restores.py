"""Wire models of restores (restoration_management/creating_a_restoration_task.rst)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from opencsbs.api.schemas.common import WireModel


class VolumeMapping(WireModel):
    """``restore_volume_mapping``: which disk backup goes onto which target disk."""

    backup_id: str = Field(min_length=1, max_length=64)
    volume_id: str = Field(min_length=1, max_length=64)


class RestoreTargets(WireModel):
    """``restore_target`` of a restore request."""

    server_id: str = Field(min_length=1, max_length=64)
    volumes: list[VolumeMapping] = Field(min_length=1)


class RestoreParam(WireModel):
    """``restore_param``."""

    checkpoint_item_id: str = Field(min_length=1, max_length=64)
    power_on: bool
    targets: RestoreTargets


class RestoreReq(WireModel):
    """``restore_req``."""

    checkpoint_id: str = Field(min_length=1, max_length=64)
    provider_id: str = Field(min_length=1, max_length=64)
    parameters: RestoreParam
    restore_target: str | None = Field(default=None, max_length=255)


class RestoreRequest(WireModel):
    """Body of ``POST /v1/{project_id}/restores``."""

    restore: RestoreReq


class RestoreEnvelope(BaseModel):
    restore: dict[str, Any]
