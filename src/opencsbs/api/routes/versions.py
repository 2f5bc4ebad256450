"""``GET /``, ``/v1``, ``/v1/``: the API versions document (Karbor's shape), no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

router = APIRouter(tags=["versions"])

UPDATED = "2017-02-20T00:00:00Z"


class Link(BaseModel):
    rel: str
    href: str


class MediaType(BaseModel):
    base: str
    type: str


class Version(BaseModel):
    """One API version (Karbor/OpenStack versions document)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    status: str
    updated: str
    min_version: str
    version: str
    links: list[Link]
    media_types: list[MediaType] = Field(alias="media-types")


class VersionList(BaseModel):
    versions: list[Version]


class VersionOne(BaseModel):
    version: Version


def _version(request: Request) -> dict:
    base = str(request.base_url).rstrip("/")
    return {
        "id": "v1.0",
        "status": "CURRENT",
        "updated": UPDATED,
        "min_version": "",
        "version": "",
        "links": [{"rel": "self", "href": f"{base}/v1/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.data-protect+json;version=1"}],
    }


@router.get("/", summary="List API versions", response_model=VersionList, response_model_by_alias=True)
def versions(request: Request) -> dict:
    """``{"versions": [version]}``."""
    return {"versions": [_version(request)]}


@router.get("/v1/", summary="Show API v1", response_model=VersionOne, response_model_by_alias=True)
def version_v1(request: Request) -> dict:
    """``{"version": version}``."""
    return {"version": _version(request)}


@router.get("/v1", summary="Show API v1 (same as /v1/)", response_model=VersionOne, response_model_by_alias=True)
def version_v1_bare(request: Request) -> dict:
    """``{"version": version}``, without redirecting to ``/v1/``."""
    return {"version": _version(request)}
