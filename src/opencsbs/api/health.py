"""Health probes, without a token and outside the CSBS prefix (opencsbs extensions; no CSBS route or body
changes):

- ``GET /healthz``: the process is alive and serves HTTP: always 200 ``{"status": "ok", "version": "..."}``.
- ``GET /readyz``: what the service needs is reachable: the database (``SELECT 1``), the bank (its ``bank.json``
  is read) and the cloud driver (asked for one server that does not exist: one call whatever the cloud's size),
  each within :data:`CHECK_TIMEOUT` seconds, at once. 200 ``{"status": "ready", "checks": {...}}`` when all
  answer, else 503 ``{"status": "not ready", "not_ready": ["bank"], "checks": {"bank": {"ok": false,
  "error": "..."}, ...}}``. Error texts are one line with any URL password masked.

docs/operations.md shows how load balancers and systemd use them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from opencsbs import __version__
from opencsbs.api.deps import get_runtime
from opencsbs.runtime import Runtime

#: seconds one readiness check may take before it counts as not ready
CHECK_TIMEOUT = 5.0

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


_PASSWORD = re.compile(r"(//[^/:@\s]+):[^@/\s]+@")


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of at most 300 characters, URL passwords masked (``//user:***@host``)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _PASSWORD.sub(r"\1:***@", text)[:300]


def _database(runtime: Runtime) -> None:
    from sqlalchemy import text

    with runtime.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _bank(runtime: Runtime) -> None:
    if runtime.bank.store.head("bank.json") is None:
        raise RuntimeError(f"bank.json missing in {runtime.bank.store.location}")


def _cloud(runtime: Runtime) -> None:
    from opencsbs.clouds.base import CloudContext

    runtime.driver.get_servers(CloudContext(project_id="", all_tenants=True),
                               ["00000000-0000-0000-0000-000000000000"])


CHECKS: dict[str, Callable[[Runtime], None]] = {"database": _database, "bank": _bank, "cloud": _cloud}


def readiness(runtime: Runtime, timeout: float = CHECK_TIMEOUT) -> dict:
    """Run every check of :data:`CHECKS` at once, each in its own thread bounded by ``timeout`` seconds; the
    :class:`Readiness` body as a dict."""
    results: dict[str, dict] = {}

    def run(name: str, check: Callable[[Runtime], None]) -> None:
        started = time.monotonic()
        try:
            check(runtime)
            results[name] = {"ok": True, "seconds": round(time.monotonic() - started, 4)}
        except Exception as exc:  # any failure of a dependency is "not ready", told in one line
            results[name] = {"ok": False, "seconds": round(time.monotonic() - started, 4), "error": one_line(exc)}

    threads = {name: threading.Thread(target=run, args=(name, check), daemon=True, name=f"readyz-{name}")
               for name, check in CHECKS.items()}
    for t in threads.values():
        t.start()
    deadline = time.monotonic() + timeout
    for name, t in threads.items():
        t.join(max(0.0, deadline - time.monotonic()))
        if name not in results:
            results[name] = {"ok": False, "seconds": timeout, "error": f"no answer within {timeout:g} s"}
    checks = {name: dict(results[name]) for name in CHECKS}
    failed = [name for name, c in checks.items() if not c["ok"]]
    return {"status": "not ready" if failed else "ready", "not_ready": failed, "checks": checks}


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
