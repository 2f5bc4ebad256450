"""Wire models of backups (resource_management/creating_a_backup_for_a_resource.rst,
backup_management/*.rst) and quotas (quota_management/querying_quotas.rst)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from opencsbs.api.schemas.common import WireModel


class ResourceTag(WireModel):
    """``resource_tag``: key 1-36, value 0-43 characters (letters, digits, ``_``, ``-``)."""

    key: str = Field(max_length=128)
    value: str = Field(default="", max_length=128)


class ProtectParam(WireModel):
    """``protect_param`` of a manual backup."""

    backup_name: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    incremental: bool | None = None
    resource_type: str | None = Field(default=None, max_length=64)
    tags: list[ResourceTag] | None = None
    extra_info: dict[str, Any] | None = None


class ProtectRequest(WireModel):
    """Body of ``POST /v1/{project_id}/providers/{provider_id}/resources/{resource_id}/action``."""

    protect: ProtectParam


class PlanResource(BaseModel):
    type: str
    id: str
    name: str
    extra_info: Any = None


class PlanResp(BaseModel):
    id: str
    name: str
    resources: list[PlanResource]


class CheckpointResp(BaseModel):
    """``protect_resp``."""

    id: str
    project_id: str
    status: str
    created_at: str
    resource_graph: str | None = None
    protection_plan: PlanResp
    extra_info: Any = None


class CheckpointEnvelope(BaseModel):
    checkpoint: CheckpointResp


class CheckpointItemEnvelope(BaseModel):
    checkpoint_item: dict[str, Any]


class CheckpointItemLink(BaseModel):
    rel: str
    href: str


class CheckpointItemList(BaseModel):
    checkpoint_items: list[dict[str, Any]]
    checkpoint_items_links: list[CheckpointItemLink] | None = Field(
        default=None, description="a next link when more remain")


class Count(BaseModel):
    count: int


class QuotaResource(BaseModel):
    type: str
    quota: int
    used: int
    unit: str | None = None


class Quota(BaseModel):
    resources: list[QuotaResource]


class QuotaEnvelope(BaseModel):
    quotas: Quota
