"""``GET /``, ``/v1``, ``/v1/``: the API versions document (Karbor's shape), no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(tags=["versions"])

UPDATED = "2017-02-20T00:00:00Z"


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


@router.get("/", summary="List API versions")
def versions(request: Request) -> dict:
    """``{"versions": [version]}``."""
    return {"versions": [_version(request)]}


@router.get("/v1", summary="Show API v1", include_in_schema=False)
@router.get("/v1/", summary="Show API v1")
def version_v1(request: Request) -> dict:
    """``{"version": version}``."""
    return {"version": _version(request)}
