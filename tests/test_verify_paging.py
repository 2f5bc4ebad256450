"""``marker``/``limit`` paging of ``GET /opencsbs/v1/{project_id}/verify_runs`` and ``.../drills`` (docs/verify.md).

Each test fails without the guarantee it names: a client walking a list with ``marker`` (the last id of the
previous page) sees every row exactly once, newest first, and reaches an empty page (before, ``marker`` was
ignored and the walk answered the first page forever); a marker that is not a row of that list in the URL's
project is 400 CSBS.9001 as on every marker-paged list (``core.listing.page_anchor``).

Rows are written straight to the database with set ``created_at`` (two sharing one, so the ``id`` tie-break of
the keyset is walked too): the paging is the list's, not the engine's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from opencsbs.db.base import transaction
from opencsbs.db.models import Drill, VerifyRun

V = "/opencsbs/v1/demo"
T0 = datetime(2026, 3, 1, 12, 0, 0)
#: minutes after T0 of the five rows; two share a created_at
OFFSETS = (0, 5, 5, 9, 20)


def _runs(runtime, project: str = "demo") -> list[str]:
    with transaction(runtime.sessions) as session:
        rows = [VerifyRun(project_id=project, status="ok", selector={}, verified=[], skipped=[], affected=[],
                          problems=[], message="", created_by="t", created_at=T0 + timedelta(minutes=m))
                for m in OFFSETS]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def _drills(runtime, project: str = "demo", server: str = "srv-1") -> list[str]:
    with transaction(runtime.sessions) as session:
        rows = [Drill(project_id=project, checkpoint_item_id=f"item-{i}", resource_id=server, resource_name="s",
                      choice="latest", status="passed", bytes_restored=0, volumes=[], message="", created_by="t",
                      created_at=T0 + timedelta(minutes=m))
                for i, m in enumerate(OFFSETS)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def _newest_first(ids: list[str]) -> list[str]:
    """The lists' order: ``created_at`` descending, then ``id`` descending."""
    return [i for _, i in sorted(zip(OFFSETS, ids), reverse=True)]


def _walk(client, headers, path: str, key: str, limit: int = 2, **params) -> list[list[str]]:
    pages, marker = [], None
    for _ in range(10):
        query = {**params, "limit": limit, **({"marker": marker} if marker is not None else {})}
        r = client.get(f"{V}/{path}", params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = [row["id"] for row in r.json()[key]]
        pages.append(page)
        if not page:
            return pages
        marker = page[-1]
    raise AssertionError(f"the walk did not end: {pages}")


@pytest.mark.parametrize("path,key,make", [("verify_runs", "verify_runs", _runs), ("drills", "drills", _drills)])
def test_a_marker_walk_returns_every_row_once_newest_first_and_stops(demo, runtime, path, key, make):
    client, member = demo
    ids = make(runtime)
    make(runtime, "other-project")
    pages = _walk(client, member, path, key)
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    walked = [i for p in pages for i in p]
    assert walked == _newest_first(ids)
    # the unpaged list has the same order
    r = client.get(f"{V}/{path}", headers=member)
    assert [row["id"] for row in r.json()[key]] == walked


def test_the_drill_walk_keeps_its_filters(demo, runtime):
    client, member = demo
    ids = _drills(runtime, server="srv-1")
    others = _drills(runtime, server="srv-2")
    pages = _walk(client, member, "drills", "drills", server_id="srv-1")
    assert [i for p in pages for i in p] == _newest_first(ids)
    # a drill of the project outside the filter is not a marker of the filtered list
    r = client.get(f"{V}/drills", params={"server_id": "srv-1", "marker": others[0]}, headers=member)
    assert r.status_code == 400, r.text
    assert r.json() == {"error_code": "CSBS.9001",
                        "error_msg": f"Invalid request parameters: marker {others[0]} not found"}


@pytest.mark.parametrize("path,make", [("verify_runs", _runs), ("drills", _drills)])
def test_an_unknown_or_foreign_marker_is_refused(demo, runtime, path, make):
    client, member = demo
    make(runtime)
    foreign = make(runtime, "other-project")[0]
    for marker in ("nope", foreign):
        r = client.get(f"{V}/{path}", params={"marker": marker, "limit": 2}, headers=member)
        assert r.status_code == 400, (marker, r.text)
        assert r.json() == {"error_code": "CSBS.9001",
                            "error_msg": f"Invalid request parameters: marker {marker} not found"}


def test_the_openapi_document_declares_marker(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/opencsbs/v1/{project_id}/verify_runs", "/opencsbs/v1/{project_id}/drills"):
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert {"marker", "limit"} <= names, (path, names)
