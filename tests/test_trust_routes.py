"""The extension routes of retention locks, legal holds, verify runs, drills and check schedules, on a project that
has one of each (tests/test_fuzz.py and tests/test_route_sweep.py cover every route, but on a project without
any, so random ids stop at the 404 and a sweep finds nothing to leak):

- fuzzed by schemathesis in both modes with the real ids in the path (a cloud-admin token, so every rule
  passes): no 5xx, every 4xx the JSON error body;
- swept with the tokens of another project (member and admin): 403/404 with an error body on this project's
  URLs, and neither this project's ids nor its name in any answer, on its URLs or on the other project's URLs
  carrying this project's ids.
"""

from __future__ import annotations

import pytest

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from engine_helpers import DB1, DB1_SYS, MIB, item_of, protect, random_bytes, run_jobs, write
from test_fuzz import EXAMPLES, check_answer
from test_route_sweep import sweep

V = "/opencsbs/v1/demo"
DAILY = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=3;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
#: path segments of the extension routes of this area
AREA = ("/locks", "/holds", "/lock_audit", "/retention", "/verify_runs", "/drills", "/verifications",
        "/verification", "/check_schedules")


@pytest.fixture
def seeded(demo, make_token, runtime) -> dict[str, str]:
    """Project demo with a backup, a governance lock, a legal hold, a verify run, a drill and a check schedule:
    ``{path parameter name: id}``."""
    client, member = demo
    admin = {"X-Auth-Token": make_token("demo", "admin")}
    write(runtime, DB1_SYS, 0, random_bytes(MIB, 5))
    r = protect(client, member, DB1)
    assert r.status_code == 200, r.text
    run_jobs(runtime)
    item = item_of(client, member, r.json()["checkpoint"]["id"])

    def post(path: str, body: dict, key: str) -> str:
        r = client.post(f"{V}/{path}", json=body, headers=admin)
        assert r.status_code == 200, r.text
        return r.json()[key]["id"]

    ids = {
        "checkpoint_item_id": item["id"],
        "lock_id": post("locks", {"lock": {"mode": "governance", "min_retention_days": 3}}, "lock"),
        "hold_id": post("holds", {"hold": {"name": "case-1", "checkpoint_item_ids": [item["id"]]}}, "hold"),
        "run_id": post("verify_runs", {"verify_run": {}}, "verify_run"),
        "drill_id": post("drills", {"drill": {"choice": "id", "checkpoint_item_id": item["id"]}}, "drill"),
        "schedule_id": post("check_schedules", {"check_schedule": {"kind": "drill", "pattern": DAILY,
                                                                   "parameters": {"choice": "latest"}}},
                            "check_schedule"),
    }
    run_jobs(runtime)
    return ids | {"checkpoint_id": item["checkpoint_id"]}


def _area(operation) -> bool:
    path = operation.path
    return path.startswith("/opencsbs/v1/{project_id}/") and any(seg in path for seg in AREA)


def test_the_extension_routes_fuzzed_on_real_objects_give_no_5xx(client, make_token, seeded):
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    token = make_token(None, "cloud-admin")
    problems: dict[tuple[str, str, str], str] = {}
    reached: set[str] = set()  # operations that answered 2xx on the real objects
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not _area(operation):
            continue
        operations.append(operation.label)
        for mode in GenerationMode:
            try:
                _fuzzer(operation, mode, token, seeded, problems, reached)()
            except Unsatisfiable:
                pass
    assert len(operations) >= 20, operations
    for path in ("locks/{lock_id}", "holds/{hold_id}", "drills/{drill_id}", "verify_runs/{run_id}",
                 "checkpoint_items/{checkpoint_item_id}/retention"):
        label = f"GET /opencsbs/v1/{{project_id}}/{path}"
        assert label in reached, (label, sorted(reached))
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())


def _fuzzer(operation, mode, token: str, seeded: dict[str, str], problems: dict, reached: set[str]):
    @given(case=operation.as_strategy(generation_mode=mode))
    @hsettings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        # the real objects of project demo in the path, the generated data everywhere else
        case.path_parameters = {name: "demo" if name == "project_id" else seeded.get(name, value)
                                for name, value in (case.path_parameters or {}).items()}
        response = case.call(headers={"X-Auth-Token": token})
        why = check_answer(case, response)
        if 200 <= response.status_code < 300:
            reached.add(operation.label)
        if why is not None:
            problems.setdefault((operation.label, mode.value, why.split(":")[0]),
                                f"{why}\n    request: {case.method} {case.formatted_path} "
                                f"query={case.query} body={str(case.body)[:200]}")

    return fuzz


@pytest.mark.parametrize("role", ["member", "admin"])
def test_another_projects_token_sees_nothing_of_the_extension_objects(client, make_token, seeded, role):
    own = make_token("demo", "member")
    for name in ("intruder", f"intruder-{role}"):
        checked = sweep(client, "demo", own, name, make_token(name, role), set(seeded.values()))
        assert checked >= 20
    # and the lists of the other project's own URLs are empty
    other = {"X-Auth-Token": make_token("intruder", role)}
    for path, key in (("locks", "locks"), ("holds", "holds"), ("verify_runs", "verify_runs"),
                      ("drills", "drills"), ("check_schedules", "check_schedules"), ("lock_audit", "records")):
        r = client.get(f"/opencsbs/v1/intruder/{path}", headers=other)
        assert r.status_code == 200 and r.json()[key] == [], (path, r.text)
