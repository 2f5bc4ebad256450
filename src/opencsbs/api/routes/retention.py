"""Retention dry-run: an opencsbs extension route under ``/opencsbs/v1/{project_id}`` (no CSBS route or body
changes; docs/policies.md "Retention dry-run"), rule ``csbs:policies:read``.

- ``GET /opencsbs/v1/{project_id}/policies/{policy_id}/retention_preview[?include_kept=true]``: 200
  ``{"retention_preview": {...}}``, what the policy's next retention pass would delete and why (and, with
  ``include_kept``, why the others stay); nothing is deleted. 404 CSBS.3000 for an unknown policy.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from opencsbs.api.deps import Caller, require
from opencsbs.api.schemas.common import ERRORS
from opencsbs.service import policy_runs

router = APIRouter(tags=["opencsbs extensions: retention dry-run"], responses=ERRORS)


class PreviewBackup(BaseModel):
    checkpoint_item_id: str
    name: str
    server_id: str
    created_at: str
    status: str
    action: Literal["delete", "kept_by_lock", "keep"]
    reason: str
    error_code: str | None


class Preview(BaseModel):
    policy_id: str
    now: str
    rule: dict[str, int | bool | str]
    backups: list[PreviewBackup]


class PreviewEnvelope(BaseModel):
    retention_preview: Preview


@router.get("/opencsbs/v1/{project_id}/policies/{policy_id}/retention_preview", response_model=PreviewEnvelope,
            summary="What a policy's retention would delete next, and why (extension)")
def retention_preview(policy_id: str = Path(..., min_length=1, max_length=64),
                      include_kept: bool = Query(False, description="also list the backups it keeps, and why"),
                      caller: Caller = Depends(require("csbs:policies:read"))) -> dict:
    """The policy's automatic backups the next retention pass deletes (``action`` ``delete``, ``reason`` the
    rule: max_backups, retention_duration_days, long-term limits, failed backups), those a legal hold or
    retention lock keeps (``kept_by_lock``, ``error_code`` CSBS.81xx) and, with ``include_kept``, the others
    (``keep``). Nothing is deleted. 404 CSBS.3000 unknown policy."""
    return {"retention_preview": policy_runs.retention_preview(caller.runtime, caller.project_id, policy_id,
                                                               include_kept=include_kept)}
