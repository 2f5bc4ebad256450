"""Response models of backup policies (backup_policy_management/*.rst) and of their tags. The request models,
shared with the CLI, are in :mod:`opencsbs.wire.policies`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# --- responses ------------------------------------------------------------------------------------------------
# Routes answer with ``response_model_exclude_unset``: a field the service leaves out stays out of the body.


class ResourceResp(BaseModel):
    id: str
    type: str
    name: str
    extra_info: dict | None = None


class TriggerPropertiesResp(BaseModel):
    pattern: str
    start_time: str = Field(description="YYYY-MM-DD HH:MM:SS (UTC)")
    format: str = "ical"


class TriggerResp(BaseModel):
    id: str
    name: str
    type: str = "time"
    properties: TriggerPropertiesResp


class OperationDefinitionResp(BaseModel):
    """Numbers are strings in create/update responses and JSON numbers in show/list (docs/policies.md)."""

    max_backups: int | str | None = None
    retention_duration_days: int | str | None = None
    permanent: bool | str | None = None
    day_backups: int | str | None = None
    week_backups: int | str | None = None
    month_backups: int | str | None = None
    year_backups: int | str | None = None
    timezone: str | None = None
    plan_id: str
    provider_id: str


class ScheduledOperationResp(BaseModel):
    id: str
    name: str
    description: str
    enabled: bool
    operation_type: str
    operation_definition: OperationDefinitionResp
    trigger: TriggerResp
    trigger_id: str


class TagResp(BaseModel):
    key: str
    value: str


class PolicyResp(BaseModel):
    """``policy_resp``."""

    id: str
    name: str
    description: str
    project_id: str
    provider_id: str
    parameters: dict
    resources: list[ResourceResp]
    scheduled_operations: list[ScheduledOperationResp]
    status: str = Field(description="suspended (new), enabled or disabled")
    created_at: str
    tags: list[TagResp]
    user_id: str | None = None


class PolicyEnvelope(BaseModel):
    policy: PolicyResp


class Link(BaseModel):
    rel: str
    href: str


class PolicyList(BaseModel):
    policies: list[PolicyResp]
    policies_links: list[Link] | None = Field(default=None, description="a next link when more remain")


class ProjectTag(BaseModel):
    key: str
    values: list[str]


class TagListResp(BaseModel):
    tags: list[TagResp]


class ProjectTagsResp(BaseModel):
    tags: list[ProjectTag]


class TaggedResourceResp(BaseModel):
    resource_id: str
    resource_name: str
    resource_detail: dict
    tags: list[TagResp]


class TagQueryResp(BaseModel):
    """``filter``: resources and total_count; ``count``: total_count only."""

    resources: list[TaggedResourceResp] | None = None
    total_count: int
