"""Helpers for the tests that talk to the real Keystone started by ``scripts/services/keystone.sh``.

The service writes ``$OPENCSBS_WORK/env/keystone.env``; ``scripts/test.sh`` sources it. When the variables are
unset this module also reads the env file from the repository's ``.work`` directory, so a single test file can be
run by hand after ``scripts/services/keystone.sh start``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def keystone_env() -> dict[str, str]:
    """The keystone.env variables (environment first, then the env file)."""
    env: dict[str, str] = {}
    work = Path(os.environ.get("OPENCSBS_WORK", ROOT / ".work"))
    path = work / "env" / "keystone.env"
    if path.exists():
        for line in path.read_text().splitlines():
            m = re.match(r"export (\w+)=(.*)$", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
    env.update({k: v for k, v in os.environ.items() if k.startswith("OPENCSBS_TEST_KEYSTONE_")})
    return env


def keystone_available(env: dict[str, str]) -> bool:
    url = env.get("OPENCSBS_TEST_KEYSTONE_URL")
    if not url:
        return False
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def issue_token(env: dict[str, str], user: str, project: str, catalog: bool = False) -> str:
    """A project-scoped token of ``user`` (password auth)."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": env["OPENCSBS_TEST_KEYSTONE_PASSWORD"]}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    url = env["OPENCSBS_TEST_KEYSTONE_URL"] + "/auth/tokens" + ("" if catalog else "?nocatalog")
    r = httpx.post(url, json=body, timeout=30)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def revoke_token(env: dict[str, str], token: str) -> None:
    """Revoke ``token`` in Keystone (as the Keystone admin)."""
    admin = issue_token(env, "admin", "admin")
    r = httpx.request("DELETE", env["OPENCSBS_TEST_KEYSTONE_URL"] + "/auth/tokens",
                      headers={"X-Auth-Token": admin, "X-Subject-Token": token}, timeout=30)
    assert r.status_code == 204, r.text


def keystone_settings(settings, env: dict[str, str], cache_seconds: int = 60):
    """``settings`` switched to keystone mode with the opencsbs service user."""
    settings.auth.mode = "keystone"
    settings.auth.keystone_url = env["OPENCSBS_TEST_KEYSTONE_URL"]
    settings.auth.service_username = "opencsbs"
    settings.auth.service_password = env["OPENCSBS_TEST_KEYSTONE_PASSWORD"]
    settings.auth.service_project_name = "service"
    settings.auth.cache_seconds = cache_seconds
    return settings


def issue_system_token(env: dict[str, str], user: str) -> str:
    """A system-scoped token (``"system": {"all": true}``) of ``user`` (password auth)."""
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": env["OPENCSBS_TEST_KEYSTONE_PASSWORD"]}}},
        "scope": {"system": {"all": True}}}}
    r = httpx.post(env["OPENCSBS_TEST_KEYSTONE_URL"] + "/auth/tokens?nocatalog", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]
