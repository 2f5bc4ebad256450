"""What a list page costs the database, whatever its size and however deep its marker (docs/performance.md "The
cost curve"; benchmarks/scale.py measures the times): a bounded number of statements (no query per item or per
policy), and the marker walk and the count answered from an index (the plan each database gives for the very
statement the API issued: no full scan, no sort of the whole project)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import event, text

from opencsbs.db.base import new_id, transaction
from opencsbs.db.models import BackupCopy, Checkpoint, CheckpointItem, VolumeBackup
from policy_helpers import body as policy_body
from policy_helpers import create as create_policy

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
T0 = datetime(2026, 1, 1)


def _fill(runtime, project: str, count: int, start: int = 0) -> None:
    """``count`` available backups of ``project`` as the backup job leaves them (checkpoint, item, two volume
    backups; every 10th with a copy on a replica), one second apart, written in one transaction."""
    cps, items, vbs, copies = [], [], [], []
    for n in range(start, start + count):
        at = T0 + timedelta(seconds=n)
        cp_id, item_id, server = new_id(), new_id(), new_id()
        cps.append(dict(id=cp_id, project_id=project, provider_id=PROVIDER, status="available", policy_id=None,
                        plan={"id": f"fake_{new_id()}", "name": "plan", "resources": []}, created_at=at,
                        updated_at=at))
        items.append(dict(id=item_id, checkpoint_id=cp_id, project_id=project, name=f"manualbk_{n:04x}",
                          description="", status="available", resource_id=server, resource_type="OS::Nova::Server",
                          resource_name=f"server-{n}", resource_az="az1", policy_id=None, auto_trigger=False,
                          incremental=False, image_type="backup", tags=[{"key": "n", "value": str(n)}],
                          backup_data={"private_ip": "10.0.0.1", "eip": ""}, progress=100, average_speed=1000,
                          source_bytes=2 << 30, stored_bytes=1 << 30, fail_reason="", fail_op="", created_at=at,
                          updated_at=at, protected_at=at, finished_at=at))
        for pos in range(2):
            vbs.append(dict(id=new_id(), checkpoint_item_id=item_id, position=pos, name=f"disk{pos}",
                            status="available", source_volume_id=new_id(), source_volume_name=f"disk{pos}",
                            source_volume_size=1, bootable=pos == 0, incremental=False, size_bytes=1 << 30,
                            stored_bytes=1 << 29))
        if n % 10 == 0:
            copies.append(dict(id=new_id(), project_id=project, checkpoint_item_id=item_id, replica="far",
                               status="available", created_at=at))
    with transaction(runtime.sessions) as session:
        for model, rows in ((Checkpoint, cps), (CheckpointItem, items), (VolumeBackup, vbs), (BackupCopy, copies)):
            session.execute(model.__table__.insert(), rows)


@contextmanager
def _statements(runtime):
    """The ``(sql, parameters)`` the runtime's engine executes inside the block."""
    seen: list[tuple[str, object]] = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(runtime.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(runtime.engine, "before_cursor_execute", listen)


def _get(client, headers, url, **params):
    r = client.get(url, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _about(seen, table: str) -> list[str]:
    return [sql for sql, _ in seen if f"FROM {table}" in sql]


def test_a_backup_page_costs_the_same_statements_whatever_its_size_and_depth(demo, runtime):
    client, headers = demo
    _fill(runtime, "demo", 60)
    url = "/v1/demo/checkpoint_items"
    every = _get(client, headers, url)["checkpoint_items"]
    assert len(every) == 60 and all(len(i["extend_info"]["volume_backups"]) == 2 for i in every)
    deep = every[40]["id"]
    counts = {}
    for limit in (3, 50):
        for marker in (None, deep):
            params = {"limit": limit} | ({"marker": marker} if marker else {})
            with _statements(runtime) as seen:
                page = _get(client, headers, url, **params)["checkpoint_items"]
            start = 41 if marker else 0
            assert [i["id"] for i in page] == [i["id"] for i in every[start:start + limit]]
            assert page == every[start:start + limit]  # volume backups and copies as the one big page shows them
            assert len(_about(seen, "volume_backups")) == 1 and len(_about(seen, "backup_copies")) == 1
            counts[limit, marker] = len(seen)
    assert counts[3, None] == counts[50, None] and counts[3, deep] == counts[50, deep] == counts[3, None] + 1, counts

    # the next links walk the whole list, page after page, in the one big page's order
    walked, params = [], {"limit": 7}
    while True:
        body = _get(client, headers, url, **params)
        walked += [i["id"] for i in body["checkpoint_items"]]
        if "checkpoint_items_links" not in body:
            break
        params = {"limit": 7, "marker": body["checkpoint_items_links"][0]["href"].rsplit("marker=", 1)[1]}
    assert walked == [i["id"] for i in every]


def test_a_policy_page_costs_the_same_statements_whatever_its_size(demo, runtime):
    client, headers = demo
    for n in range(8):
        b = policy_body(name=f"policy-{n}", resources=())
        b["policy"]["tags"] = [{"key": "n", "value": str(n)}]
        assert create_policy(client, headers, b).status_code == 200
    url = "/v1/demo/policies"
    every = _get(client, headers, url)["policies"]
    assert [p["name"] for p in every] == [f"policy-{n}" for n in reversed(range(8))]
    counts = {}
    for limit in (2, 8):
        with _statements(runtime) as seen:
            page = _get(client, headers, url, limit=limit)["policies"]
        assert page == every[:limit]
        assert len(_about(seen, "scheduled_operations")) == 1 and len(_about(seen, "tags")) == 1
        counts[limit] = len(seen)
    assert counts[2] == counts[8], counts
    with _statements(runtime) as seen:
        page = _get(client, headers, url, limit=2, marker=every[5]["id"])["policies"]
    assert page == every[6:8] and len(seen) == counts[2] + 1


def _plan(runtime, sql: str, parameters) -> str:
    with runtime.engine.connect() as conn:
        if runtime.engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql("EXPLAIN " + sql, parameters).all()
            return "\n".join(r[0] for r in rows)
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters).all()
        return "\n".join(str(r[-1]) for r in rows)


def test_the_marker_walk_and_the_count_read_an_index(demo, runtime):
    """The deep page of a project among others reads ix_checkpoint_items_project_id_created_at_id from the marker
    on (PostgreSQL: an index scan with the row comparison as its condition; SQLite: a search of that index), with
    no sort of the project's backups; a count filtered by time reads that index only, an unfiltered one only the
    project's tally rows."""
    client, headers = demo
    _fill(runtime, "demo", 1500)
    _fill(runtime, "other", 4500, start=1500)
    if runtime.engine.dialect.name == "postgresql":  # what autovacuum does: statistics and the visibility map
        with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE checkpoint_items"))
    url = "/v1/demo/checkpoint_items"
    marker = _get(client, headers, url, limit=1, offset=1200)["checkpoint_items"][0]["id"]
    with _statements(runtime) as seen:
        page = _get(client, headers, url, limit=20, marker=marker)["checkpoint_items"]
        count = _get(client, headers, url + "/count", start_time="2026-01-01T00:00:00.000000")["count"]
    assert len(page) == 20 and count == 1500
    (page_sql, page_params), = [(s, p) for s, p in seen if "FROM checkpoint_items" in s and "ORDER BY" in s]
    (count_sql, count_params), = [(s, p) for s, p in seen if "count(" in s and "FROM checkpoint_items" in s]
    with _statements(runtime) as seen:  # unfiltered: summed from the project's tally rows (db/tallies.py)
        assert _get(client, headers, url + "/count")["count"] == 1500
    assert not [s for s, _ in seen if "FROM checkpoint_items" in s], seen
    assert [s for s, _ in seen if "FROM checkpoint_item_tallies" in s], seen
    page_plan, count_plan = _plan(runtime, page_sql, page_params), _plan(runtime, count_sql, count_params)
    index = "ix_checkpoint_items_project_id_created_at_id"
    if runtime.engine.dialect.name == "postgresql":
        assert f"Index Scan Backward using {index}" in page_plan, page_plan
        assert "Index Cond: (((project_id)::text = " in page_plan, page_plan
        assert "ROW(created_at, (id)::text) < ROW(" in page_plan, page_plan
        assert "Sort" not in page_plan and "Seq Scan" not in page_plan, page_plan
        assert f"Index Only Scan using {index}" in count_plan and "Seq Scan" not in count_plan, count_plan
    else:
        assert f"SEARCH checkpoint_items USING INDEX {index} (project_id=? AND (created_at,id)<(?,?))" in page_plan, \
            page_plan
        assert "TEMP B-TREE" not in page_plan, page_plan
        assert f"USING COVERING INDEX {index} (project_id=? AND created_at>?)" in count_plan, count_plan
