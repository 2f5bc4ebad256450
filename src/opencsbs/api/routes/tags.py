"""The 12 tag calls: ``/v1/{project_id}/csbs_backup_policy/...`` (policies) and ``/v1/{project_id}/csbs_backup/...``
(backups). Source: tag_management/*.rst. Writes answer 204, reads 200; rules in ``core.tags``.
"""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Path, Response

from opencsbs.api.deps import Caller, project_caller
from opencsbs.api.schemas.common import ERRORS
from opencsbs.api.schemas.policies import ProjectTagsResp, TagListResp, TagQueryResp
from opencsbs.core.errors import invalid
from opencsbs.service import tags

router = APIRouter(tags=["tags"], responses=ERRORS)

KINDS = {"csbs_backup_policy": tags.POLICY, "csbs_backup": tags.BACKUP}
ResourceId = Path(..., min_length=1, max_length=64, description="Backup policy ID or backup ID")


def _no_content() -> Response:
    return Response(status_code=204)


def _register(prefix: str, kind: str) -> None:
    base = "/v1/{project_id}/" + prefix
    noun = "backup policy" if kind == tags.POLICY else "backup"

    @router.get(base + "/tags", response_model=ProjectTagsResp, summary=f"Query the {noun} tags of a project",
                name=f"{kind}_project_tags")
    def project_tags(caller: Caller = Depends(project_caller)) -> dict:
        caller.enforce("csbs:tags:read")
        return tags.project_tags(caller.runtime, caller.project_id, kind)

    @router.post(base + "/resource_instances/action", response_model=TagQueryResp, response_model_exclude_unset=True,
                 summary=f"Query {noun}s by tag", name=f"{kind}_query")
    def query(body: dict = Body(...), caller: Caller = Depends(project_caller)) -> dict:
        caller.enforce("csbs:tags:read")
        return tags.query(caller.runtime, caller.project_id, kind, body)

    @router.get(base + "/{resource_id}/tags", response_model=TagListResp, summary=f"Query the tags of a {noun}",
                name=f"{kind}_tags")
    def resource_tags(resource_id: str = ResourceId, caller: Caller = Depends(project_caller)) -> dict:
        caller.enforce("csbs:tags:read")
        return tags.resource_tags(caller.runtime, caller.project_id, kind, resource_id)

    @router.post(base + "/{resource_id}/tags", status_code=204, summary=f"Add a tag to a {noun}",
                 name=f"{kind}_add_tag")
    def add_tag(body: dict = Body(...), resource_id: str = ResourceId,
                caller: Caller = Depends(project_caller)) -> Response:
        caller.enforce("csbs:tags:write")
        if "tag" not in body:
            raise invalid("tag is required")
        tags.add_tag(caller.runtime, caller.project_id, kind, resource_id, body["tag"])
        return _no_content()

    @router.post(base + "/{resource_id}/tags/action", status_code=204,
                 summary=f"Batch add or remove tags of a {noun}", name=f"{kind}_batch")
    def batch(body: dict = Body(...), resource_id: str = ResourceId,
              caller: Caller = Depends(project_caller)) -> Response:
        caller.enforce("csbs:tags:write")
        tags.batch(caller.runtime, caller.project_id, kind, resource_id, body)
        return _no_content()

    @router.delete(base + "/{resource_id}/tags/{key}", status_code=204, summary=f"Remove a tag from a {noun}",
                   name=f"{kind}_remove_tag")
    def remove_tag(key: str, resource_id: str = ResourceId, caller: Caller = Depends(project_caller)) -> Response:
        caller.enforce("csbs:tags:write")
        tags.remove_tag(caller.runtime, caller.project_id, kind, resource_id, key)
        return _no_content()


for _prefix, _kind in KINDS.items():
    _register(_prefix, _kind)
