"""``opencsbs policy ...``: backup policies of a project, by the same use cases and rules as the API."""

from __future__ import annotations

import json

import click

from opencsbs.cli._common import CLI_USER, BadValue, Ctx, csbs_errors, pass_ctx, server_refusals
from opencsbs.cli.output import Column, chosen_format, emit, human_time, output_options
from opencsbs.cli.remote import remote_of


@click.group()
def policy() -> None:
    """Backup policies of a project (the same rules as the API; tables, or the API's JSON with -f json)."""


def _operation(p: dict) -> dict:
    ops = p.get("scheduled_operations") or [{}]
    return ops[0]


def _schedule(p: dict) -> str:
    """The RRULE line of the policy's pattern (``FREQ=DAILY;BYHOUR=2;BYMINUTE=0``), or the pattern itself."""
    pattern = ((_operation(p).get("trigger") or {}).get("properties") or {}).get("pattern") or ""
    for line in pattern.replace("\\r\\n", "\n").splitlines():
        if line.strip().upper().startswith("RRULE:"):
            return line.strip()[len("RRULE:"):]
    return pattern.strip() or "-"


def _retention(p: dict) -> str:
    definition = _operation(p).get("operation_definition") or {}
    parts = [f"{definition[key]} {label}" for key, label in (("max_backups", "backups"),
                                                             ("retention_duration_days", "days"))
             if definition.get(key) not in (None, "", -1, "-1")]
    return ", ".join(parts) or "keep all"


POLICY_COLUMNS = [
    Column("ID", lambda p: p["id"]),
    Column("NAME", lambda p: p["name"]),
    Column("STATUS", lambda p: p["status"]),
    Column("SERVERS", lambda p: len(p.get("resources") or [])),
    Column("SCHEDULE", _schedule),
    Column("RETENTION", _retention),
]

POLICY_FIELDS = [
    Column("id", lambda p: p["id"]),
    Column("name", lambda p: p["name"]),
    Column("description", lambda p: p.get("description") or "-"),
    Column("project", lambda p: p.get("project_id") or "-"),
    Column("status", lambda p: p["status"]),
    Column("scheduling", lambda p: "enabled" if _operation(p).get("enabled") else "disabled"),
    Column("schedule", _schedule),
    Column("retention", _retention),
    Column("servers", lambda p: [r["id"] for r in p.get("resources") or []]),
    Column("created", lambda p: human_time(p.get("created_at"))),
]

CHECKPOINT_FIELDS = [
    Column("id", lambda c: c["id"]),
    Column("status", lambda c: c["status"]),
    Column("policy", lambda c: (c.get("protection_plan") or {}).get("id") or "-"),
    Column("servers", lambda c: [r["id"] for r in (c.get("protection_plan") or {}).get("resources") or []]),
    Column("created", lambda c: human_time(c.get("created_at"))),
]


def _policy_call(ctx: Ctx, project: str, fn, explain=None):
    """``fn(runtime, principal)`` as an admin of ``project``; a refusal exits with its CSBS text followed by what
    ``explain(runtime, principal, error)`` adds (see :func:`_why`), a body the wire models refuse with the field."""
    from pydantic import ValidationError

    from opencsbs.auth.base import Principal

    runtime = ctx.runtime()
    principal = Principal.operator(project, CLI_USER)
    try:
        with csbs_errors(lambda exc: explain(runtime, principal, exc) if explain else []):
            return fn(runtime, principal)
    except ValidationError as exc:
        raise click.ClickException(f"invalid policy: {_validation_line(exc)}") from exc
    finally:
        runtime.close()


def _validation_line(exc) -> str:
    """``<field path>: <reason>`` of a pydantic ``ValidationError``'s first error, as a person reads it:
    ``name: must be ...`` rather than ``('policy', 'name'): Value error, must be ...``."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "policy"]
    msg = str(first.get("msg", "")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{'.'.join(loc)}: {msg}" if loc else msg


def _why(project: str, servers=(), name: str | None = None):
    """An ``explain`` for :func:`_policy_call`: for a duplicate name, which name the project already has; for a
    server refusal (CSBS.60xx: bound to another policy, busy, in a bad state, none left to back up), each server's
    refusal as check_protectable gives it. ``servers``: ids, or ``servers(runtime, principal)`` giving them."""
    from opencsbs.core import codes

    def explain(runtime, principal, exc) -> list[str]:
        if exc.error_code == codes.DUPLICATE_POLICY_NAME.code and name:
            return [f"project {project} already has a policy named {name!r}"]
        if exc.error_code.startswith("CSBS.60"):
            ids = servers(runtime, principal) if callable(servers) else servers
            return server_refusals(runtime, principal, project, ids)
        return []

    return explain


def _body_servers(raw: dict) -> list[str]:
    """The server ids of a policy body (those that look like ones)."""
    resources = raw["policy"].get("resources")
    return [r["id"] for r in resources if isinstance(r, dict) and isinstance(r.get("id"), str)] \
        if isinstance(resources, list) else []


def _load_body(file) -> dict:
    """The ``{"policy": {...}}`` body of ``--file`` (the file may hold the policy itself). A file that is not JSON is
    a bad value (one line naming it, exit 2); JSON that is no object is refused as the API refuses a body (exit
    1)."""
    try:
        data = json.load(file)
    except ValueError as exc:
        raise BadValue(f"--file {file.name}: not JSON ({exc})") from exc
    body = data if isinstance(data, dict) and "policy" in data else {"policy": data}
    if not isinstance(body["policy"], dict):
        raise click.ClickException(f'--file {file.name}: must be a JSON object ({{"policy": {{...}}}} or the policy '
                                   'itself)')
    return body


#: ``max_backups``/``retention_duration_days``: -1 (no limit) or 0..99999, as the API takes them (wire ``Limit``)
RETENTION_LIMIT = click.IntRange(-1, 99999)

DAILY_2AM = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=0\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"


@policy.command("create")
@click.option("--project", required=True, help="project id")
@click.option("--file", "file", type=click.File("r"), default=None,
              help="JSON body of POST /policies ({\"policy\": {...}}); the options below build one otherwise")
@click.option("--name", default=None)
@click.option("--description", default="")
@click.option("--server", "servers", multiple=True, help="server id to bind (repeatable)")
@click.option("--pattern", default=DAILY_2AM, show_default="daily at 02:00 UTC", help="iCalendar VEVENT with RRULE")
@click.option("--max-backups", type=RETENTION_LIMIT, default=None,
              help="keep the N newest automatic backups (-1: no limit)")
@click.option("--retention-days", type=RETENTION_LIMIT, default=None,
              help="keep automatic backups D days (-1: no limit)")
@click.option("--disabled", is_flag=True, help="create with automatic scheduling off")
@output_options
@pass_ctx
def policy_create(ctx: Ctx, project, file, name, description, servers, pattern, max_backups, retention_days,
                  disabled, fmt, as_json, columns) -> None:
    """Create a policy; prints it (-f value -c id: only its id)."""
    from opencsbs.service import policies
    from opencsbs.wire.policies import PolicyCreateRequest

    if file is not None:
        raw = _load_body(file)
    else:
        if not name:
            raise click.UsageError("--name is required without --file")
        definition = {k: v for k, v in (("max_backups", max_backups), ("retention_duration_days", retention_days))
                      if v is not None}
        raw = {"policy": {
            "name": name, "description": description, "provider_id": None, "parameters": {"common": {}},
            "resources": [{"id": s, "type": "OS::Nova::Server", "name": ""} for s in servers],
            "scheduled_operations": [{"enabled": not disabled, "operation_type": "backup",
                                      "operation_definition": definition,
                                      "trigger": {"properties": {"pattern": pattern}}}],
        }}

    def _create(runtime, principal):
        if raw["policy"].get("provider_id") is None:
            raw["policy"]["provider_id"] = runtime.settings.provider_id
        spec = PolicyCreateRequest.model_validate(raw).policy.model_dump(exclude_unset=True)
        return policies.create_policy(runtime, principal, project, spec)

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            if raw["policy"].get("provider_id") is None:
                raw["policy"]["provider_id"] = remote.provider
            body = remote.v1("POST", "/policies", json=raw)["policy"]
        return emit(body, POLICY_FIELDS, chosen_format(fmt, as_json), columns)
    name = raw["policy"].get("name")
    explain = _why(project, _body_servers(raw), name if isinstance(name, str) else None)
    emit(_policy_call(ctx, project, _create, explain), POLICY_FIELDS, chosen_format(fmt, as_json), columns)


@policy.command("list")
@click.option("--project", required=True)
@click.option("--name", default=None)
@click.option("--status", default=None)
@click.option("--sort", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="at most this many (1 or more)")
@click.option("--marker", default=None)
@output_options
@pass_ctx
def policy_list(ctx: Ctx, project, name, status, sort, limit, marker, fmt, as_json, columns) -> None:
    """List a project's policies."""
    from opencsbs.service import policies

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            page = remote.policies({"marker": marker, "limit": limit, "sort": sort, "name": name, "status": status})
        return emit(page, POLICY_COLUMNS, chosen_format(fmt, as_json), columns)
    query = policies.ListQuery(marker=marker, limit=limit, sort=sort, name=name, status=status)
    page, _next = _policy_call(ctx, project, lambda rt, p: policies.list_policies(rt, p, project, query))
    emit(page, POLICY_COLUMNS, chosen_format(fmt, as_json), columns)


@policy.command("show")
@click.option("--project", required=True)
@click.argument("policy_id")
@output_options
@pass_ctx
def policy_show(ctx: Ctx, project, policy_id, fmt, as_json, columns) -> None:
    """Show one policy."""
    from opencsbs.service import policies

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            return emit(remote.policy(policy_id), POLICY_FIELDS, chosen_format(fmt, as_json), columns)
    emit(_policy_call(ctx, project, lambda rt, p: policies.show_policy(rt, p, project, policy_id)), POLICY_FIELDS,
         chosen_format(fmt, as_json), columns)


@policy.command("update")
@click.option("--project", required=True)
@click.argument("policy_id")
@click.option("--file", "file", type=click.File("r"), default=None, help="JSON body of PUT /policies/{id}")
@click.option("--name", default=None)
@click.option("--description", default=None)
@click.option("--enable/--disable", "enabled", default=None, help="turn automatic scheduling on or off")
@click.option("--pattern", default=None)
@output_options
@pass_ctx
def policy_update(ctx: Ctx, project, policy_id, file, name, description, enabled, pattern, fmt, as_json,
                  columns) -> None:
    """Change a policy; prints it."""
    from opencsbs.service import policies
    from opencsbs.wire.policies import PolicyUpdateRequest

    body = _load_body(file) if file is not None else None

    def _raw(show) -> dict:
        """The PUT body: ``--file``'s, or the one the options build (``show()`` gives the current policy)."""
        if body is not None:
            return body
        raw = {"policy": {k: v for k, v in (("name", name), ("description", description)) if v is not None}}
        if enabled is not None or pattern is not None:
            op: dict = {"id": show()["scheduled_operations"][0]["id"]}
            if enabled is not None:
                op["enabled"] = enabled
            if pattern is not None:
                op["trigger"] = {"properties": {"pattern": pattern}}
            raw["policy"]["scheduled_operations"] = [op]
        return raw

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            updated = remote.v1("PUT", f"/policies/{policy_id}", json=_raw(lambda: remote.policy(policy_id)))
        return emit(updated["policy"], POLICY_FIELDS, chosen_format(fmt, as_json), columns)

    def _update(runtime, principal):
        raw = _raw(lambda: policies.show_policy(runtime, principal, project, policy_id))
        spec = PolicyUpdateRequest.model_validate(raw).policy.model_dump(exclude_unset=True)
        return policies.update_policy(runtime, principal, project, policy_id, spec)

    new_name = body["policy"].get("name") if body is not None else name
    explain = _why(project, _body_servers(body) if body is not None else [],
                   new_name if isinstance(new_name, str) else None)
    emit(_policy_call(ctx, project, _update, explain), POLICY_FIELDS, chosen_format(fmt, as_json), columns)


@policy.command("delete")
@click.option("--project", required=True)
@click.argument("policy_id")
@pass_ctx
def policy_delete(ctx: Ctx, project, policy_id) -> None:
    """Delete a policy (its backups stay)."""
    from opencsbs.service import policies

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            remote.v1("DELETE", f"/policies/{policy_id}")
    else:
        _policy_call(ctx, project, lambda rt, p: policies.delete_policy(rt, p, project, policy_id))
    click.echo(f"policy {policy_id} deleted")


@policy.command("run")
@click.option("--project", required=True)
@click.argument("policy_id")
@click.option("--server", "servers", multiple=True, help="only these servers of the policy")
@output_options
@pass_ctx
def policy_run(ctx: Ctx, project, policy_id, servers, fmt, as_json, columns) -> None:
    """Execute a policy now (manual backups); prints the checkpoint (its backups: opencsbs backup list)."""
    from opencsbs.service import policies, policy_runs

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            checkpoint = remote.run_policy(policy_id, list(servers) or None)
        return emit(checkpoint, CHECKPOINT_FIELDS, chosen_format(fmt, as_json), columns)

    def _servers(runtime, principal) -> list[str]:
        return list(servers) or [r["id"] for r in policies.show_policy(runtime, principal, project, policy_id)
                                 ["resources"]]

    emit(_policy_call(ctx, project, lambda rt, p: policy_runs.execute(
        rt, p, project, policy_id, resources=list(servers) or None), _why(project, _servers)), CHECKPOINT_FIELDS,
         chosen_format(fmt, as_json), columns)


PREVIEW_COLUMNS = [
    Column("BACKUP", lambda b: b["checkpoint_item_id"]),
    Column("NAME", lambda b: b["name"]),
    Column("SERVER", lambda b: b["server_id"]),
    Column("CREATED", lambda b: human_time(b["created_at"])),
    Column("ACTION", lambda b: b["action"]),
    Column("REASON", lambda b: b["reason"]),
]


@policy.command("retention")
@click.option("--project", required=True)
@click.argument("policy_id")
@click.option("--dry-run", is_flag=True, help="show what the next retention pass would delete (required: "
              "retention itself runs after each scheduled run and every retention_interval_hours)")
@click.option("--all", "include_kept", is_flag=True, help="also list the backups it keeps, and why")
@output_options
@pass_ctx
def policy_retention(ctx: Ctx, project, policy_id, dry_run, include_kept, fmt, as_json, columns) -> None:
    """Which automatic backups of a policy its retention would delete next, and why: the rule (max_backups,
    retention_duration_days, long-term limits, failed backups) or the legal hold / retention lock that keeps
    them (action kept_by_lock). Nothing is deleted."""
    from opencsbs.service import policy_runs

    if not dry_run:
        raise click.UsageError("only --dry-run is supported: retention runs by itself after each scheduled run")
    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            body = remote.ext("GET", f"/policies/{policy_id}/retention_preview",
                              params={"include_kept": "true" if include_kept else None})["retention_preview"]
    else:
        body = _policy_call(ctx, project, lambda rt, p: policy_runs.retention_preview(
            rt, project, policy_id, include_kept=include_kept))
    fmt = chosen_format(fmt, as_json)
    if fmt == "json":
        return emit(body, PREVIEW_COLUMNS, fmt, columns)
    rule = ", ".join(f"{k} {v}" for k, v in body["rule"].items()) or "no retention rule"
    doomed = sum(b["action"] == "delete" for b in body["backups"])
    locked = sum(b["action"] == "kept_by_lock" for b in body["backups"])
    click.echo(f"policy {policy_id} ({rule}): {doomed} backup(s) to delete, {locked} kept by a lock or hold",
               err=True)
    emit(body["backups"], PREVIEW_COLUMNS, fmt, columns)
