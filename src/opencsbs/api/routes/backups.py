"""Backups: ``GET /v1/{project_id}/checkpoint_items`` (+ ``/count``, ``/{checkpoint_item_id}``), ``DELETE
/v1/{project_id}/providers/{provider_id}/checkpoints/{checkpoint_id}`` and ``GET /v1/{project_id}/quotas``.

Sources: backup_management/querying_all_backups.rst, querying_a_single_backup.rst,
querying_the_number_of_backups.rst, deleting_a_backup.rst; quota_management/querying_quotas.rst.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request

from opencsbs.api.deps import Caller, check_provider, require
from opencsbs.api.schemas.backups import CheckpointItemEnvelope, CheckpointItemList, Count, QuotaEnvelope
from opencsbs.api.schemas.common import ERRORS, MAX_QUERY_INT
from opencsbs.service import backups, checkpoint_items

router = APIRouter(tags=["backups"], responses=ERRORS)


def item_query(
    status: str | None = Query(None, max_length=32),
    name: str | None = Query(None, max_length=255, description="fuzzy"),
    az: str | None = Query(None, max_length=64),
    resource_id: str | None = Query(None, max_length=64),
    resource_name: str | None = Query(None, max_length=255, description="fuzzy"),
    resource_type: str | None = Query(None, max_length=64),
    start_time: str | None = Query(None, max_length=64),
    end_time: str | None = Query(None, max_length=64),
    image_type: str | None = Query(None, max_length=32),
    policy_id: str | None = Query(None, max_length=64),
    checkpoint_id: str | None = Query(None, max_length=64),
    ip: str | None = Query(None, max_length=64, description="the server's private IP or EIP"),
    all_tenants: bool = Query(False),
) -> checkpoint_items.ItemQuery:
    """The filters shared by the list and the count (one dependency, so the two never disagree)."""
    return checkpoint_items.ItemQuery(status=status, name=name, az=az, resource_id=resource_id, resource_name=resource_name,
                             resource_type=resource_type, start_time=start_time, end_time=end_time,
                             image_type=image_type, policy_id=policy_id, checkpoint_id=checkpoint_id, ip=ip,
                             all_tenants=all_tenants)


def _tenants(caller: Caller, q: checkpoint_items.ItemQuery) -> None:
    if q.all_tenants:
        caller.enforce("csbs:all_tenants")


@router.get("/v1/{project_id}/checkpoint_items", response_model=CheckpointItemList,
            response_model_exclude_unset=True, summary="Query all backups")
def list_checkpoint_items(
    request: Request,
    q: checkpoint_items.ItemQuery = Depends(item_query),
    sort: str | None = Query(None, max_length=1024),
    limit: int | None = Query(None, le=MAX_QUERY_INT),
    marker: str | None = Query(None, max_length=64),
    offset: int | None = Query(None, le=MAX_QUERY_INT),
    caller: Caller = Depends(require("csbs:checkpoint_items:read")),
) -> dict:
    """Backups matching the filters, ``sort`` ``key[:asc|desc],...`` (default ``created_at:desc``), after
    ``marker``, skipping ``offset``, at most ``limit`` (default 1000). ``all_tenants`` needs the admin role.
    When more remain, ``checkpoint_items_links`` holds ``{"rel": "next", "href": ...}``: this URL with ``marker``
    set to the page's last id (``offset`` dropped), which the Go SDKs' pagers follow; none on the last page."""
    _tenants(caller, q)
    page_size = checkpoint_items.DEFAULT_LIMIT if limit is None else limit
    probe = page_size + 1 if page_size > 0 else page_size  # one more tells whether a next page exists
    items = checkpoint_items.list_items(caller.runtime, caller.project_id, q, sort=sort, limit=probe, marker=marker,
                               offset=offset)
    body: dict = {"checkpoint_items": items[:page_size]}
    if len(items) > page_size:
        body["checkpoint_items_links"] = next_links(request, items[page_size - 1]["id"])
    return body


def next_links(request: Request, marker: str) -> list[dict]:
    """``[{"rel": "next", "href": ...}]``: the request's URL with ``marker`` replaced and ``offset`` dropped."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("marker", "offset")]
    return [{"rel": "next", "href": str(request.url.replace(query=urlencode([*params, ("marker", marker)])))}]


@router.get("/v1/{project_id}/checkpoint_items/count", response_model=Count, summary="Query the number of backups")
def count_checkpoint_items(
    q: checkpoint_items.ItemQuery = Depends(item_query),
    caller: Caller = Depends(require("csbs:checkpoint_items:read")),
) -> dict:
    """``{"count": n}`` of the backups matching the filters."""
    _tenants(caller, q)
    return {"count": checkpoint_items.count_items(caller.runtime, caller.project_id, q)}


@router.get("/v1/{project_id}/checkpoint_items/{checkpoint_item_id}", response_model=CheckpointItemEnvelope,
            summary="Query a single backup")
def show_checkpoint_item(
    checkpoint_item_id: str = Path(..., max_length=64),
    caller: Caller = Depends(require("csbs:checkpoint_items:read")),
) -> dict:
    """One backup, by checkpoint_item id or (single-server backup) checkpoint id; 404 CSBS.3001 otherwise.
    Admins may read other projects' backups."""
    item = checkpoint_items.get_item(caller.runtime, caller.project_id, checkpoint_item_id,
                            all_tenants=caller.runtime.enforcer.allowed(caller.principal, "csbs:all_tenants"))
    return {"checkpoint_item": item}


@router.delete("/v1/{project_id}/providers/{provider_id}/checkpoints/{checkpoint_id}", summary="Delete a backup")
def delete_checkpoint(
    checkpoint_id: str = Path(..., max_length=64),
    checkpoint_items: str | None = Query(None, max_length=4096, description="comma-separated item ids"),
    _provider: str = Depends(check_provider),
    caller: Caller = Depends(require("csbs:checkpoints:delete")),
) -> dict:
    """Delete every backup of the checkpoint, or those in ``checkpoint_items``; answers ``{}`` at once while the
    data is dropped in the background (items read ``deleting``, then ``deleted``; a repeated DELETE meanwhile is 400
    CSBS.2003)."""
    ids = None
    if checkpoint_items is not None:
        ids = [i.strip() for i in checkpoint_items.split(",") if i.strip()]
        if not ids:
            from opencsbs.core.errors import invalid

            raise invalid("checkpoint_items is empty")
    backups.delete_checkpoint(caller.runtime, caller.project_id, checkpoint_id, ids)
    return {}


@router.get("/v1/{project_id}/quotas", response_model=QuotaEnvelope, response_model_exclude_none=True,
            summary="Query quotas")
def quotas(caller: Caller = Depends(require("csbs:quotas:read"))) -> dict:
    """``backup_capacity`` (GB, -1 unlimited) and ``backups`` (count) with what the project uses."""
    return backups.get_quotas(caller.runtime, caller.project_id)
