"""The cost curve: list, count and get of checkpoint_items and policies at 10^3 ... 10^6 backups.

For each database (``--databases``: sqlite, postgresql) and each layout (``--layouts``):

- ``one``: every backup in one project (``one``), 32 policies (the default quota) with two servers each;
- ``many``: 100 backups per project over ``N / 100`` projects (``m-0``, ``m-1``, ...), 4 policies per project; the
  project ``m-0`` is measured as a member, and the whole cloud with ``all_tenants`` as the cloud admin;

the tables are filled straight through SQL, with rows shaped as ``service/backups.py`` ``create_backup`` and the
backup job write them (a checkpoint, its checkpoint_item, one volume backup per disk; statuses available, error and
deleted; the backup tags in the item), written inside the database by ``INSERT ... SELECT`` (:class:`BackupsSQL`),
and as ``service/policies.py`` ``create_policy`` writes policies (resources, scheduled operation, tags; SQLite
``executemany``, PostgreSQL ``COPY``). The
database grows from one size to the next (``--sizes``, default ``1000 10000 100000``; 10^6 takes minutes to fill:
``--sizes 1000 10000 100000 1000000``), and at each size every call below runs ``--reps`` times through the real
API (the app in process, httpx over its ASGI transport) and the script prints p50/p99 in ms and the SQL statements
one call issued:

- ``items first`` ``GET /v1/{p}/checkpoint_items?limit=100``; ``items deep``: the same with ``marker`` set to the
  backup 90 % down the default order (created_at desc); ``items filter first/deep``: with ``status=available``
  and ``policy_id``; ``items count``, ``items count filter`` and ``items count status`` (``status=available``
  alone: from the tallies, as the unfiltered count); ``items get`` one by id; ``quotas`` ``GET /v1/{p}/quotas``
  (the count and stored bytes every new backup's quota check reads);
- ``policies first`` ``GET /v1/{p}/policies?limit=10``, ``policies deep`` (marker 90 % down), ``policies get``;
- layout ``many`` also ``all items first/deep`` and ``all policies first/deep`` with ``all_tenants=true``.

The last line per layout compares the largest and smallest size: ``p99 ratio`` of every call (flat: close to 1).

    .venv/bin/python benchmarks/scale.py                                   # both databases, 10^3..10^5
    .venv/bin/python benchmarks/scale.py --databases postgresql --sizes 1000 1000000 --layouts one

PostgreSQL: ``--pg-url`` (default ``$OPENCSBS_TEST_PG_URL`` or ``postgresql+psycopg://postgres@127.0.0.1/postgres``)
is the admin URL; a database ``opencsbs_scale_<layout>`` is created (dropped first) and dropped at the end
(``--keep`` keeps it). SQLite files live in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import JSON, create_engine, event, func, select, text
from sqlalchemy.orm import Session

from opencsbs.auth.local import create_token
from opencsbs.bootstrap import build_runtime
from opencsbs.config import Settings
from opencsbs.db.base import transaction
from opencsbs.db.models import CheckpointItem, Policy, PolicyResource, ScheduledOperation, Tag
from opencsbs.db.tallies import compact

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
BASE_TIME = datetime(2025, 1, 1)
PAGE = 100
ONE_POLICIES = 32
MANY_PER_PROJECT = 100
MANY_POLICIES = 4
BATCH = 100_000


def _uuid(kind: int, n: int) -> str:
    """A deterministic UUID4-shaped id (kind 1 checkpoint, 2 item, 3 volume backup, 4 policy, 5 operation,
    6 server, 7 volume)."""
    return f"{kind:08x}-{n >> 48 & 0xffff:04x}-4{n >> 36 & 0xfff:03x}-8{n >> 24 & 0xfff:03x}-{n & 0xffffff:012x}"


# --- filling ------------------------------------------------------------------------------------------------


class Filler:
    """Writes rows of the ORM tables in batches: ``executemany`` on SQLite, ``COPY`` on PostgreSQL."""

    def __init__(self, engine):
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"

    def write(self, model, rows: list[dict]) -> None:
        if not rows:
            return
        table = model.__table__
        cols = [c.name for c in table.columns if c.name in rows[0]]
        with self.engine.begin() as conn:
            if not self.pg:  # the DB-API's executemany on values the column types' own bind processors made
                dialect = conn.dialect
                procs = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in cols]
                cur = conn.connection.dbapi_connection.cursor()
                cur.execute("PRAGMA cache_size=-262144")
                cur.executemany(f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                [tuple(row[c] if p is None or row[c] is None or isinstance(row[c], str) else p(row[c])
                                       for c, p in zip(cols, procs)) for row in rows])
                return
            json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
            cur = conn.connection.dbapi_connection.cursor()
            with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([json.dumps(row[c]) if c in json_cols and not isinstance(row[c], (str, type(None)))
                                    else row[c]
                                    for c in cols])


class BackupsSQL:
    """``INSERT ... SELECT`` statements that write backups number ``lo`` to ``hi - 1`` inside the database
    (PostgreSQL ``generate_series``, SQLite a recursive CTE), with the rows ``service/backups.py`` create_backup and
    the backup job leave: a checkpoint, its checkpoint_item (available with figures and times; every 50th
    ``error`` with its fail fields, every 100th ``deleted``), two volume backups; the backup tags in the item;
    3/4 of them made by one of the project's policies. Backup ``n`` was created at BASE_TIME + n seconds; its
    server is ``n // 10``. Ids are :func:`_uuid` (``n < 2**23``)."""

    def __init__(self, dialect: str, layout: str):
        self.pg = dialect == "postgresql"
        self.layout = layout

    def hex(self, expr: str, width: int) -> str:
        return f"lpad(to_hex({expr}), {width}, '0')" if self.pg else f"printf('%0{width}x', {expr})"

    def uuid(self, kind: int, expr: str) -> str:
        return f"'{kind:08x}-0000-4000-8000-' || {self.hex(expr, 12)}"

    def at(self, expr: str) -> str:
        if self.pg:
            return f"(timestamp '{BASE_TIME:%Y-%m-%d %H:%M:%S}' + ({expr}) * interval '1 second')"
        return f"(datetime('{BASE_TIME:%Y-%m-%d %H:%M:%S}', '+' || ({expr}) || ' seconds') || '.000000')"

    def json(self, expr: str) -> str:
        return f"CAST({expr} AS json)" if self.pg else expr

    def source(self) -> str:
        if self.pg:
            return "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS g(n)"
        return "g"

    def prefix(self) -> str:
        return "" if self.pg else "WITH RECURSIVE g(n) AS (SELECT :lo UNION ALL SELECT n + 1 FROM g WHERE n + 1 < :hi) "

    def statements(self) -> list[str]:
        one = self.layout == "one"
        per = ONE_POLICIES if one else MANY_POLICIES
        project = "'one'" if one else f"('m-' || (n / {MANY_PER_PROJECT}))"
        policy_n = f"(n % {per})" if one else f"((n / {MANY_PER_PROJECT}) * {per} + n % {per})"
        policy = f"CASE WHEN n % 4 = 0 THEN NULL ELSE {self.uuid(4, policy_n)} END"
        status = "CASE WHEN n % 100 = 99 THEN 'deleted' WHEN n % 50 = 49 THEN 'error' ELSE 'available' END"
        err = "(n % 50 = 49 AND n % 100 <> 99)"
        server_id, server_name = self.uuid(6, "n / 10"), "('server-' || (n / 10))"
        name = f"(CASE WHEN n % 4 = 0 THEN 'manualbk_' ELSE 'autobk_' END || {self.hex('n % 65536', 4)})"
        plan = (f"""'{{"id": "' || COALESCE({policy}, 'fake_' || {self.uuid(8, 'n')}) || '", "name": "' || """
                f"""COALESCE('policy ' || {policy}, 'server protect plan for ' || {server_id}) || """
                f"""'", "resources": [{{"type": "OS::Nova::Server", "id": "' || {server_id} || '", "name": "' || """
                f"""{server_name} || '", "extra_info": "{{}}"}}]}}'""")
        tags = ("""'[{"key": "env", "value": "' || CASE WHEN n % 3 = 0 THEN 'test' ELSE 'prod' END || """
                """'"}, {"key": "n", "value": "' || n || '"}]'""")
        backup_data = ("""'{"__openstack_region_name": "eu-de", "cloudservicetype": "QEMU", "disk": 40, "eip": "", """
                       """"imagetype": "gold", "private_ip": "10.' || (n / 10 / 65536 % 256) || '.' || """
                       """(n / 10 / 256 % 256) || '.' || (n / 10 % 256) || '", "ram": 4096, "vcpus": 2}'""")
        checkpoints = {
            "id": self.uuid(1, "n"), "project_id": project, "provider_id": f"'{PROVIDER}'", "status": status,
            "policy_id": policy, "plan": self.json(plan), "extra_info": "NULL", "created_at": self.at("n"),
            "updated_at": self.at("n + 30"),
        }
        ok = f"(NOT {err})"
        items = {
            "id": self.uuid(2, "n"), "checkpoint_id": self.uuid(1, "n"), "project_id": project, "name": name,
            "description": "''", "status": status, "resource_id": server_id, "resource_type": "'OS::Nova::Server'",
            "resource_name": server_name, "resource_az": "CASE WHEN n / 10 % 2 = 1 THEN 'az1' ELSE 'az2' END",
            "policy_id": policy, "auto_trigger": "(n % 4 <> 0)", "incremental": "(n % 7 <> 0)",
            "image_type": "'backup'", "tags": self.json(tags), "extra_info": "NULL",
            "backup_data": self.json(backup_data),
            "progress": f"CASE WHEN {err} THEN 0 ELSE 100 END",
            "average_speed": f"CASE WHEN {err} THEN 0 ELSE 51200 END",
            "source_bytes": f"CASE WHEN {err} THEN 0 ELSE {40 << 30} END",
            "stored_bytes": f"CASE WHEN {err} THEN 0 ELSE {3 << 30} + n END",
            "fail_code": f"CASE WHEN {err} THEN 'CSBS.3004' END",
            "fail_reason": f"CASE WHEN {err} THEN 'the server was deleted while its backup ran' ELSE '' END",
            "fail_op": f"CASE WHEN {err} THEN 'backup' ELSE '' END", "job_id": self.uuid(9, "n"),
            "created_at": self.at("n"), "updated_at": self.at("n + 30"),
            "protected_at": f"CASE WHEN {ok} THEN {self.at('n + 30')} END", "finished_at": self.at("n + 30"),
        }
        volumes = {
            "id": self.uuid(3, "n * 2 + pos"), "checkpoint_item_id": self.uuid(2, "n"), "position": "pos",
            "name": f"{name} || '_disk' || pos", "status": f"CASE WHEN {err} THEN 'error' ELSE {status} END",
            "source_volume_id": self.uuid(7, "n / 10 * 2 + pos"),
            "source_volume_name": f"{server_name} || '-disk' || pos", "source_volume_size": "20",
            "device": "CASE WHEN pos = 0 THEN '/dev/vda' ELSE '/dev/vdb' END", "bootable": "(pos = 0)",
            "incremental": "(n % 7 <> 0)", "snapshot_id": f"CASE WHEN {ok} THEN 'snap-' || n || '-' || pos END",
            "change_token": "NULL",
            "index_name": f"CASE WHEN {ok} THEN 'indexes/checkpoints/' || {self.uuid(1, 'n')} || '/' || "
                          f"{self.uuid(3, 'n * 2 + pos')} || '.idx' END",
            "base_index": "NULL", "size_bytes": f"CASE WHEN {err} THEN 0 ELSE {20 << 30} END",
            "read_bytes": f"CASE WHEN {err} THEN 0 ELSE {2 << 30} END",
            "stored_bytes": f"CASE WHEN {err} THEN 0 ELSE ({3 << 30} + n) / 2 END",
            "chunk_count": f"CASE WHEN {err} THEN 0 ELSE 384 END", "seconds": "40.0",
            "average_speed": f"CASE WHEN {err} THEN 0 ELSE 51200 END", "finished_at": self.at("n + 30"),
        }
        out = []
        disks = " CROSS JOIN (SELECT 0 AS pos UNION ALL SELECT 1) AS d"
        for table, cols, extra in (("checkpoints", checkpoints, ""), ("checkpoint_items", items, ""),
                                   ("volume_backups", volumes, disks)):
            out.append(f"{self.prefix()}INSERT INTO {table} ({', '.join(cols)}) "
                       f"SELECT {', '.join(cols.values())} FROM {self.source()}{extra}")
        return out


def _policy_rows(n: int, project: str, servers: list[int]):
    """A policy as create_policy writes it: its servers, one scheduled operation, two tags."""
    policy_id = _uuid(4, n)
    created = BASE_TIME + timedelta(minutes=n)
    policy = dict(id=policy_id, project_id=project, name=f"policy-{n}", description="", provider_id=PROVIDER,
                  status="enabled", parameters={"common": {}}, created_at=created, updated_at=created)
    resources = [dict(policy_id=policy_id, resource_id=_uuid(6, s), resource_type="OS::Nova::Server",
                      name=f"server-{s}", extra_info=None, position=pos) for pos, s in enumerate(servers)]
    operation = dict(id=_uuid(5, n), policy_id=policy_id, project_id=project, name=f"op-{n}", description="",
                     enabled=True, operation_type="backup", operation_definition={"max_backups": 10},
                     trigger_id=_uuid(10, n), trigger_name="default", trigger_type="time",
                     pattern="BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=WEEKLY;BYDAY=MO;BYHOUR=14;BYMINUTE=00"
                             "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
                     start_time=created, next_run_at=None, created_at=created, updated_at=created)
    tags = [dict(project_id=project, resource_kind="policy", resource_id=policy_id, key=k, value=v,
                 created_at=created) for k, v in (("owner", f"team-{n % 5}"), ("env", "prod"))]
    return policy, resources, operation, tags


class Layout:
    """What exists at the current size and how to grow it."""

    def __init__(self, name: str, filler: Filler):
        self.name, self.filler, self.items = name, filler, 0
        self.policies: dict[str, list[str]] = {}  # project -> policy ids

    def grow(self, size: int) -> None:
        """Write backups ``self.items`` to ``size - 1`` and the policies of the projects they open."""
        assert size < 2 ** 22, "ids are made for fewer than 4 million backups"
        pols, res, ops, tags = [], [], [], []
        per = ONE_POLICIES if self.name == "one" else MANY_POLICIES
        first, last = self.items // MANY_PER_PROJECT, (size - 1) // MANY_PER_PROJECT
        for index in ([0] if self.name == "one" else range(first, last + 1)):
            project = "one" if self.name == "one" else f"m-{index}"
            if project in self.policies:
                continue
            self.policies[project] = []
            for k in range(per):
                pn = index * per + k
                p, r, o, t = _policy_rows(pn, project, [pn * 2, pn * 2 + 1])
                self.policies[project].append(p["id"])
                pols.append(p), res.extend(r), ops.append(o), tags.extend(t)
        for model, rows in ((Policy, pols), (PolicyResource, res), (ScheduledOperation, ops), (Tag, tags)):
            for at in range(0, len(rows), BATCH):
                self.filler.write(model, rows[at:at + BATCH])
        statements = BackupsSQL(self.filler.engine.dialect.name, self.name).statements()
        for lo in range(self.items, size, BATCH):
            with self.filler.engine.begin() as conn:
                for sql in statements:
                    conn.execute(text(sql), {"lo": lo, "hi": min(size, lo + BATCH)})
        self.items = size
        # what housekeeping does between two of its passes: fold the tally rows the triggers wrote (db/tallies.py)
        with Session(self.filler.engine) as session:
            compact(session)
            session.commit()
        if self.filler.pg:
            with self.filler.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))


# --- measuring ----------------------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Probe:
    """Counts the SQL statements the runtime's engine executes."""

    def __init__(self, engine):
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._tick)

    def _tick(self, *args) -> None:
        self.count += 1


def _deep(session, stmt, where: float = 0.9):
    """The id 90 % down ``stmt``'s order (stmt selects ids, ordered)."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    return session.scalar(stmt.offset(max(0, int(total * where) - 1)).limit(1)), total


def calls_for(runtime, layout: Layout, member: str, admin: str) -> list[tuple[str, str, str]]:
    """``(label, url, token)`` of every measured call at the current size."""
    project = "one" if layout.name == "one" else "m-0"
    with runtime.sessions() as s:
        live = [CheckpointItem.project_id == project, CheckpointItem.status != "deleted"]
        order = (CheckpointItem.created_at.desc(), CheckpointItem.id.desc())
        deep, _ = _deep(s, select(CheckpointItem.id).where(*live).order_by(*order))
        policy = layout.policies[project][1]
        fdeep, _ = _deep(s, select(CheckpointItem.id).where(CheckpointItem.project_id == project,
                                                            CheckpointItem.status == "available",
                                                            CheckpointItem.policy_id == policy).order_by(*order))
        pdeep, _ = _deep(s, select(Policy.id).where(Policy.project_id == project)
                         .order_by(Policy.created_at.desc(), Policy.id.desc()))
        all_deep = all_pdeep = None
        if layout.name == "many":
            all_deep, _ = _deep(s, select(CheckpointItem.id).where(CheckpointItem.status != "deleted")
                                .order_by(*order))
            all_pdeep, _ = _deep(s, select(Policy.id).order_by(Policy.created_at.desc(), Policy.id.desc()))
    items = f"/v1/{project}/checkpoint_items"
    filt = f"status=available&policy_id={policy}"
    calls = [
        ("items first", f"{items}?limit={PAGE}", member),
        ("items deep", f"{items}?limit={PAGE}&marker={deep}", member),
        ("items filter first", f"{items}?limit={PAGE}&{filt}", member),
        ("items filter deep", f"{items}?limit={PAGE}&{filt}&marker={fdeep}", member),
        ("items count", f"{items}/count", member),
        ("items count filter", f"{items}/count?{filt}", member),
        ("items count status", f"{items}/count?status=available", member),
        ("quotas", f"/v1/{project}/quotas", member),
        ("items get", f"{items}/{deep}", member),
        ("policies first", f"/v1/{project}/policies?limit=10", member),
        ("policies deep", f"/v1/{project}/policies?limit=10&marker={pdeep}", member),
        ("policies get", f"/v1/{project}/policies/{policy}", member),
    ]
    if layout.name == "many":
        calls += [
            ("all items first", f"{items}?limit={PAGE}&all_tenants=true", admin),
            ("all items deep", f"{items}?limit={PAGE}&all_tenants=true&marker={all_deep}", admin),
            ("all policies first", f"/v1/{project}/policies?limit=10&all_tenants=true", admin),
            ("all policies deep", f"/v1/{project}/policies?limit=10&all_tenants=true&marker={all_pdeep}", admin),
        ]
    return calls


async def _measure(app, probe: Probe, calls, reps: int) -> dict[str, dict]:
    out = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scale.test", timeout=600) as client:
        for label, url, token in calls:
            headers = {"X-Auth-Token": token}
            r = await client.get(url, headers=headers)  # warm: caches, compiled statements
            if r.status_code != 200:
                raise SystemExit(f"{label}: {url} answered {r.status_code} {r.text[:300]}")
            body = r.json()
            before = probe.count
            await client.get(url, headers=headers)
            statements = probe.count - before
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                r = await client.get(url, headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"{label}: {r.status_code} {r.text[:300]}")
            rows = (len(body.get("checkpoint_items", body.get("policies", [])))
                    if isinstance(body, dict) and ("checkpoint_items" in body or "policies" in body) else
                    body.get("count", 1))
            out[label] = {"p50": statistics.median(times), "p99": _pct(times, 99), "statements": statements,
                          "rows": rows}
    return out


def run_layout(db: str, url: str, layout_name: str, sizes: list[int], reps: int, tmp: Path) -> list[tuple]:
    from opencsbs.api.app import create_app

    settings = Settings(data_dir=tmp / f"data-{db}-{layout_name}", database_url=url, workers=0, scheduler=False)
    runtime = build_runtime(settings, migrate=True)
    try:
        with transaction(runtime.sessions) as session:
            member = create_token(session, "one" if layout_name == "one" else "m-0", "member")
            admin = create_token(session, None, cloud_admin=True)
        layout = Layout(layout_name, Filler(runtime.engine))
        app = create_app(runtime)
        probe = Probe(runtime.engine)
        rows = []
        for size in sizes:
            t0 = time.monotonic()
            layout.grow(size)
            fill = time.monotonic() - t0
            results = asyncio.run(_measure(app, probe, calls_for(runtime, layout, member, admin), reps))
            rows.append((size, fill, results))
            _print_size(db, layout_name, size, fill, results)
        return rows
    finally:
        runtime.close()


def _print_size(db: str, layout: str, size: int, fill: float, results: dict) -> None:
    print(f"\n{db} / {layout} / {size:,} backups (filled in {fill:.0f} s, load {os.getloadavg()[0]:.1f})",
          flush=True)
    print("| call | rows | SQL | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['rows']:,} | {r['statements']} | {r['p50']:.1f} | {r['p99']:.1f} |", flush=True)


def _print_curve(db: str, layout: str, rows: list[tuple]) -> None:
    sizes = [s for s, _, _ in rows]
    print(f"\n{db} / {layout}: p50 / p99 ms by backups; SQL statements per call")
    print("| call | " + " | ".join(f"{s:,}" for s in sizes) + " | p99 ratio | SQL |")
    print("|---|" + "---:|" * (len(sizes) + 2))
    for label in rows[0][2]:
        cells = [f"{r[label]['p50']:.1f} / {r[label]['p99']:.1f}" for _, _, r in rows]
        p99 = [r[label]["p99"] for _, _, r in rows]
        sql = sorted({r[label]["statements"] for _, _, r in rows})
        print(f"| {label} | " + " | ".join(cells) + f" | {p99[-1] / p99[0]:.2f} | {', '.join(map(str, sql))} |")


def _pg_admin(url: str, sql: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--layouts", nargs="+", default=["one", "many"], choices=["one", "many"])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--pg-url", default=os.environ.get("OPENCSBS_TEST_PG_URL",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL databases")
    args = ap.parse_args(argv)
    sizes = sorted(set(args.sizes))
    print(f"sizes {sizes}, {args.reps} calls each, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    curves = []
    with tempfile.TemporaryDirectory(prefix="opencsbs-scale-") as tmpdir:
        tmp = Path(tmpdir)
        for db in args.databases:
            for layout in args.layouts:
                if db == "sqlite":
                    url = f"sqlite:///{tmp / f'scale-{layout}.db'}"
                else:
                    name = f"opencsbs_scale_{layout}"
                    _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    _pg_admin(args.pg_url, f'CREATE DATABASE "{name}"')
                    url = args.pg_url.rsplit("/", 1)[0] + "/" + name
                try:
                    curves.append((db, layout, run_layout(db, url, layout, sizes, args.reps, tmp)))
                finally:
                    if db == "postgresql" and not args.keep:
                        _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "opencsbs_scale_{layout}" WITH (FORCE)')
    for db, layout, rows in curves:
        _print_curve(db, layout, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
