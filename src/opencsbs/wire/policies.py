"""Request models of backup policies (backup_policy_management/*.rst) and of executing one
(backup_management/executing_a_backup_policy.rst).

Field rules from the pages: names 1-255 of ``[A-Za-z0-9_-]``; descriptions 0-255 without ``<``/``>``;
``operation_type`` ``backup``; ``max_backups``/``retention_duration_days`` -1 or 0..99999; patterns at most
10,240 characters (their content is checked by ``core.schedule``); tags by ``core.tags``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from opencsbs.wire import WireModel

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1 to 255 letters, digits, '_' or '-'")
    return value


def _description(value: str) -> str:
    if len(value) > 255:
        raise ValueError("must be at most 255 characters")
    if "<" in value or ">" in value:
        raise ValueError("must not contain '<' or '>'")
    return value


Name = Annotated[str, AfterValidator(_name)]
Description = Annotated[str, AfterValidator(_description)]
Limit = Annotated[int, Field(ge=-1, le=99999)]
LongTerm = Annotated[int, Field(ge=0, le=100)]


class ResourceIn(WireModel):
    """A server of the policy (``resource``)."""

    id: str = Field(min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=64, description="OS::Nova::Server (or OS::Ironic::BareMetalServer)")
    name: str = Field(max_length=255)
    extra_info: dict | None = None


class TriggerPropertiesIn(WireModel):
    pattern: str = Field(min_length=1, max_length=10240, description="iCalendar VEVENT with an RRULE")


class TriggerIn(WireModel):
    properties: TriggerPropertiesIn


class OperationDefinitionIn(WireModel):
    """Retention of the automatic backups (Table 7 of creating_a_backup_policy.rst)."""

    max_backups: Limit | None = None
    retention_duration_days: Limit | None = None
    permanent: bool | None = None
    plan_id: str | None = Field(default=None, max_length=64)
    provider_id: str | None = Field(default=None, max_length=64)
    day_backups: LongTerm | None = None
    week_backups: LongTerm | None = None
    month_backups: LongTerm | None = None
    year_backups: LongTerm | None = None
    timezone: str | None = Field(default=None, max_length=64)


class ScheduledOperationCreate(WireModel):
    description: Description = ""
    enabled: bool = True
    name: Name | None = None
    operation_type: Literal["backup"]
    operation_definition: OperationDefinitionIn
    trigger: TriggerIn


class ScheduledOperationUpdate(WireModel):
    id: str = Field(min_length=1, max_length=64)
    description: Description | None = None
    enabled: bool | None = None
    name: Name | None = None
    operation_definition: OperationDefinitionIn | None = None
    trigger: TriggerIn | None = None
    trigger_id: str | None = None


class PolicyParam(WireModel):
    common: dict | None = None


class TagIn(WireModel):
    key: str
    value: str


class PolicyCreateBody(WireModel):
    name: Name
    description: Description = ""
    parameters: PolicyParam
    provider_id: str = Field(min_length=1, max_length=64)
    resources: list[ResourceIn]
    scheduled_operations: list[ScheduledOperationCreate] = Field(min_length=1, max_length=1)
    tags: list[TagIn] | None = None


class PolicyCreateRequest(WireModel):
    """Body of ``POST /v1/{project_id}/policies``."""

    policy: PolicyCreateBody


class PolicyUpdateBody(WireModel):
    name: Name | None = None
    description: Description | None = None
    parameters: PolicyParam | None = None
    resources: list[ResourceIn] | None = None
    scheduled_operations: list[ScheduledOperationUpdate] | None = Field(default=None, max_length=1)


class PolicyUpdateRequest(WireModel):
    """Body of ``PUT /v1/{project_id}/policies/{policy_id}``."""

    policy: PolicyUpdateBody


class CheckpointParam(WireModel):
    auto_trigger: bool = False
    resources: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None


class CheckpointCreate(WireModel):
    plan_id: str = Field(min_length=1, max_length=64)
    parameters: CheckpointParam


class CheckpointCreateRequest(WireModel):
    """Body of ``POST /v1/{project_id}/providers/{provider_id}/checkpoints``."""

    checkpoint: CheckpointCreate
