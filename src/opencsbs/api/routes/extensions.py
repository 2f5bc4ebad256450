"""opencsbs extension routes under ``/opencsbs/v1`` (not CSBS calls; no CSBS route or body changes):

- ``GET /opencsbs/v1/auth``: how to log in (``{"mode": "local" | "keystone"}``), no token needed;
- ``POST /opencsbs/v1/auth/tokens``: Keystone password login for browsers (``auth.login``), keystone mode only;
- ``GET /opencsbs/v1/{project_id}/servers``: the project's servers as the cloud driver sees them
  (``service.servers``), ``marker``/``limit`` paged, rule ``csbs:resources:check_protectable``.

docs/console.md describes them; the web console (``/console/``) is their client.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from opencsbs.api.deps import Caller, get_runtime, require
from opencsbs.api.schemas.common import ERRORS, MAX_QUERY_INT, WireModel
from opencsbs.auth.login import password_token
from opencsbs.core.errors import invalid
from opencsbs.runtime import Runtime
from opencsbs.service import servers

router = APIRouter(tags=["opencsbs extensions"], responses=ERRORS)


class AuthMode(BaseModel):
    mode: Literal["local", "keystone"]


class PasswordLogin(WireModel):
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=4096)
    project: str = Field(min_length=1, max_length=255, description="project name (in domain) or id")
    domain: str = Field("Default", min_length=1, max_length=255, description="user and project domain name")


class LoginRequest(WireModel):
    auth: PasswordLogin


class IssuedTokenBody(BaseModel):
    id: str
    project_id: str
    project_name: str
    user_id: str
    expires_at: str | None


class LoginResponse(BaseModel):
    token: IssuedTokenBody


class ServerVolume(BaseModel):
    id: str
    name: str
    size_gb: int
    bootable: bool
    device: str | None


class Server(BaseModel):
    id: str
    name: str
    resource_type: str
    status: str
    task_state: str | None
    availability_zone: str | None
    volumes: list[ServerVolume]


class ServerList(BaseModel):
    servers: list[Server]


@router.get("/opencsbs/v1/auth", response_model=AuthMode, summary="How to log in (extension)")
def auth_mode(runtime: Runtime = Depends(get_runtime)) -> dict:
    """``{"mode": "local"}`` (tokens from ``opencsbs token create``) or ``{"mode": "keystone"}``."""
    return {"mode": runtime.settings.auth.mode}


@router.post("/opencsbs/v1/auth/tokens", response_model=LoginResponse,
             summary="Log in with a Keystone user name, password and project (extension)")
def login(body: LoginRequest, runtime: Runtime = Depends(get_runtime)) -> dict:
    """200 ``{"token": {"id", "project_id", "project_name", "user_id", "expires_at"}}``; 401 APIGW.0301 when
    Keystone refuses; 400 CSBS.9001 in local mode (no Keystone to ask); 503 CSBS.9999 when Keystone is down."""
    if runtime.settings.auth.mode != "keystone":
        raise invalid("auth.mode is local; log in with a token from "
                      "`opencsbs token create`")
    a = body.auth
    issued = password_token(runtime.settings.auth, a.username, a.password, a.project, a.domain)
    expires = issued.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if issued.expires_at else None
    return {"token": {"id": issued.id, "project_id": issued.project_id, "project_name": issued.project_name,
                      "user_id": issued.user_id, "expires_at": expires}}


@router.get("/opencsbs/v1/{project_id}/servers", response_model=ServerList,
            summary="List the project's servers (extension)")
def list_servers(
    marker: str | None = Query(None, max_length=64),
    limit: int | None = Query(None, ge=1, le=MAX_QUERY_INT),
    caller: Caller = Depends(require("csbs:resources:check_protectable")),
) -> dict:
    """The project's servers sorted by name, after server id ``marker``, at most ``limit`` (default 1000)."""
    return {"servers": servers.list_servers(caller.runtime, caller.principal, caller.project_id, marker, limit)}
