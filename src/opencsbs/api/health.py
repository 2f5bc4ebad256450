"""Health probes, without a token and outside the CSBS prefix (opencsbs extensions; no CSBS route or body
changes):

- ``GET /healthz``: the process is alive and serves HTTP: always 200 ``{"status": "ok", "version": "..."}``.
- ``GET /readyz``: what the service needs is reachable: the database (``SELECT 1``), the bank (its ``bank.json``
  is read) and the cloud driver (asked for one server that does not exist: one call whatever the cloud's size),
  each within 5 seconds, at once (:func:`opencsbs.service.operations.readiness`). 200 ``{"status": "ready",
  "checks": {...}}`` when all answer, else 503 ``{"status": "not ready", "not_ready": ["bank"], "checks":
  {"bank": {"ok": false, "error": "..."}, ...}}``. Error texts are one line with any URL password masked.

docs/operations.md shows how load balancers and systemd use them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from opencsbs import __version__
from opencsbs.api.deps import get_runtime
from opencsbs.runtime import Runtime
from opencsbs.service.operations import readiness

router = APIRouter(tags=["opencsbs operations"])


class Alive(BaseModel):
    status: str = Field(description='always "ok"')
    version: str


class Check(BaseModel):
    ok: bool
    seconds: float = Field(description="how long the check took")
    error: str | None = Field(None, description="why it is not ready (one line)")


class Readiness(BaseModel):
    status: str = Field(description='"ready" or "not ready"')
    not_ready: list[str] = Field(description="names of the failed checks (database, bank, cloud)")
    checks: dict[str, Check]


@router.get("/healthz", response_model=Alive, summary="Liveness probe (extension)")
def healthz() -> dict:
    """200 while the process serves HTTP; no token, no dependency asked."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", response_model=Readiness, summary="Readiness probe (extension)",
            responses={503: {"model": Readiness, "description": "a dependency is not reachable"}})
def readyz(runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    """200 when the database, the bank and the cloud driver answer, else 503 naming what is not ready; no token."""
    body = readiness(runtime)
    return JSONResponse(body, status_code=503 if body["not_ready"] else 200)
