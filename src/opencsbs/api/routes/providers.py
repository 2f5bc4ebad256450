"""``GET /v1/{project_id}/providers`` and ``/providers/{provider_id}``: the one CSBS provider (Karbor's shape)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from opencsbs.api.deps import Caller, get_runtime, require
from opencsbs.api.schemas.common import ERRORS, MAX_QUERY_INT
from opencsbs.core import codes
from opencsbs.core.errors import CSBSError
from opencsbs.core.facts import SERVER_TYPES
from opencsbs.core.listing import page_anchor
from opencsbs.runtime import Runtime

router = APIRouter(tags=["providers"], responses=ERRORS)


class Provider(BaseModel):
    id: str
    name: str
    description: str
    extended_info_schema: dict


class ProviderList(BaseModel):
    providers: list[Provider]


class ProviderOne(BaseModel):
    provider: Provider


def describe(runtime: Runtime) -> dict:
    """The provider document."""
    options = {
        rtype: {"title": f"{rtype} protection options", "type": "object", "properties": {}}
        for rtype in sorted(runtime.driver.protectable_types & SERVER_TYPES)
    }
    return {
        "id": runtime.settings.provider_id,
        "name": "CSBS",
        "description": "Cloud Server Backup Service: crash-consistent whole-server backups into a "
        f"deduplicated bank (cloud driver: {runtime.driver.name})",
        "extended_info_schema": {"options_schema": options, "restore_schema": options, "saved_info_schema": options},
    }


@router.get("/v1/{project_id}/providers", response_model=ProviderList, summary="List providers")
def list_providers(
    caller: Caller = Depends(require("csbs:providers:read")),
    marker: str | None = Query(None, max_length=64),
    limit: int | None = Query(None, ge=0, le=MAX_QUERY_INT),
) -> dict:
    """The single CSBS provider; ``marker``/``limit`` honoured (a marker at or past it gives an empty list)."""
    providers = [describe(caller.runtime)]
    if marker is not None:
        ids = [p["id"] for p in providers]
        position = page_anchor(ids.index(marker) if marker in ids else None, marker)
        providers = providers[position + 1 :]
    if limit is not None:
        providers = providers[:limit]
    return {"providers": providers}


@router.get("/v1/{project_id}/providers/{provider_id}", response_model=ProviderOne, summary="Show a provider")
def show_provider(
    provider_id: str = Path(..., max_length=64, description="Backup provider ID"),
    caller: Caller = Depends(require("csbs:providers:read")),
    runtime: Runtime = Depends(get_runtime),
) -> dict:
    """The CSBS provider, or 404 for another id."""
    if provider_id != runtime.settings.provider_id:
        raise CSBSError(codes.Code("CSBS.9001", 404, "%s"), f"provider {provider_id} not found")
    return {"provider": describe(runtime)}
