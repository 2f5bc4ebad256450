"""Quotas under real concurrency: many ``protect`` (CSBS.9006) or policy-create (CSBS.0001) calls of one
project at the same instant, through a real HTTP server, never exceed the quota.

Each check is made slow on purpose (a sleep right after it passes), so without the per-project lock every
request would pass the check before any of them commits.
"""

from __future__ import annotations

import threading
import time

import httpx

from engine_helpers import PROVIDER
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, Policy
from policy_helpers import body

PROJECT = "race"
N = 6


def _inventory(runtime) -> list[str]:
    from opencsbs.clouds.sandbox.inventory import load_inventory

    ids = [f"00000000-0000-4000-8000-0000000000{i:02d}" for i in range(N)]
    data = {"projects": {PROJECT: {"servers": [
        {"id": sid, "name": f"srv-{i}", "status": "ACTIVE", "availability_zone": "az1",
         "volumes": [{"id": sid[:-2] + f"{50 + i:02d}", "size_gb": 1, "bootable": True}]}
        for i, sid in enumerate(ids)]}}}
    with transaction(runtime.sessions) as session:
        load_inventory(session, data, runtime.settings.volumes_dir)
    return ids


def _all_at_once(requests: list) -> list[httpx.Response]:
    """Send ``requests`` (callables taking an httpx.Client) from one thread each, released together."""
    barrier = threading.Barrier(len(requests))
    answers: list = [None] * len(requests)

    def run(i: int) -> None:
        with httpx.Client(timeout=60) as http:
            barrier.wait()
            try:
                answers[i] = requests[i](http)
            except Exception as exc:  # pragma: no cover - reported by the assertion below
                answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    return answers


def _slow(monkeypatch, module, name: str) -> None:
    original = getattr(module, name)

    def slowed(*args, **kwargs):
        result = original(*args, **kwargs)
        time.sleep(0.3)
        return result

    monkeypatch.setattr(module, name, slowed)


def test_concurrent_protects_never_exceed_backup_quota(runtime, live_server, make_token, monkeypatch):
    from opencsbs.service import backups

    servers = _inventory(runtime)
    runtime.settings.quotas.projects[PROJECT] = {"backups": 2}
    _slow(monkeypatch, backups, "check_new_backup")
    headers = {"X-Auth-Token": make_token(PROJECT, "member")}
    answers = _all_at_once([
        (lambda http, sid=sid: http.post(f"{live_server}/v1/{PROJECT}/providers/{PROVIDER}/resources/{sid}/action",
                                         json={"protect": {}}, headers=headers))
        for sid in servers
    ])
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 2 + [400] * (N - 2), [r.text for r in answers]
    assert all(r.json()["error_code"] == "CSBS.9006" for r in answers if r.status_code == 400)
    with runtime.sessions() as session:
        assert session.query(CheckpointItem).filter_by(project_id=PROJECT).count() == 2
    quotas = httpx.get(f"{live_server}/v1/{PROJECT}/quotas", headers=headers).json()["quotas"]["resources"]
    assert {q["type"]: q["used"] for q in quotas}["backups"] == 2


def test_concurrent_policy_creates_never_exceed_policy_quota(runtime, live_server, make_token, monkeypatch):
    from opencsbs.service import policies

    runtime.settings.policy_quota = 2
    _slow(monkeypatch, policies, "_bind_resources")  # runs after the count, before the commit
    headers = {"X-Auth-Token": make_token(PROJECT, "member")}
    answers = _all_at_once([
        (lambda http, i=i: http.post(f"{live_server}/v1/{PROJECT}/policies", json=body(f"p{i}", resources=()),
                                     headers=headers))
        for i in range(N)
    ])
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 2 + [400] * (N - 2), [r.text for r in answers]
    assert all(r.json() == {"error_code": "CSBS.0001", "error_msg": "Service over limit"}
               for r in answers if r.status_code == 400)
    with runtime.sessions() as session:
        assert session.query(Policy).filter_by(project_id=PROJECT).count() == 2
