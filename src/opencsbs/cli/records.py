"""What the CLI lists and shows: ``opencsbs backup list|show|delete``, ``restore list|show`` and
``check SERVER...`` (the API's check_protectable), with ``-f table|json|value`` (:mod:`opencsbs.cli.output`).

``backup`` and ``restore`` stay the commands they were (``opencsbs backup SERVER``, ``opencsbs restore ITEM``):
each is a group whose first argument, when it names no subcommand, goes to that direct form
(:class:`~opencsbs.cli._common.DefaultGroup`); :func:`with_subcommands` adds these subcommands to it. The command
line acts as the machine's operator, across projects unless ``--project`` says which (the same use cases as the
API's ``GET /v1/{project_id}/checkpoint_items``, ``DELETE .../checkpoints/{id}`` and
``POST .../providers/{provider_id}/resources/action``).
"""

from __future__ import annotations

import click

from opencsbs.cli._common import CLI_USER, Ctx, csbs_errors, pass_ctx
from opencsbs.cli.remote import remote_of
from opencsbs.cli.output import Column, chosen_format, emit, human_bytes, human_rate, human_time, output_options

MIB = 1024 * 1024
GIB = 1024**3


def with_subcommands(group: click.Group, *subcommands: click.Command) -> click.Group:
    """``group`` (``backup`` or ``restore``: a :class:`~opencsbs.cli._common.DefaultGroup` whose first argument,
    when it names no subcommand, goes to its direct form) with ``subcommands`` added."""
    for sub in subcommands:
        group.add_command(sub)
    return group


def _runtime(ctx: Ctx):
    return ctx.runtime()


def _gib(value) -> int:
    return int(value or 0) * GIB


# --- backups ------------------------------------------------------------------------------------------------

BACKUP_COLUMNS = [
    Column("ID", lambda b: b["id"]),
    Column("NAME", lambda b: b["name"]),
    Column("SERVER", lambda b: b["extend_info"]["resource_name"] or b["resource_id"]),
    Column("STATUS", lambda b: b["status"]),
    Column("CREATED", lambda b: human_time(b["created_at"])),
    Column("DISKS", lambda b: human_bytes(b.get("source_bytes"))),
    Column("STORED", lambda b: human_bytes(b.get("stored_bytes"))),
    Column("KIND", lambda b: "incremental" if b["extend_info"]["incremental"] else "full"),
]


def _backup_fields(b: dict) -> list[Column]:
    ext = b["extend_info"]
    fields = [
        Column("id", lambda b: b["id"]),
        Column("name", lambda b: b["name"]),
        Column("status", lambda b: b["status"] + (f" ({ext['progress']}%)" if b["status"] == "protecting" else "")),
        Column("server", lambda b: f"{ext['resource_name']} ({b['resource_id']}, {b['resource_type']})"),
        Column("project", lambda b: b.get("project_id", "-")),
        Column("checkpoint", lambda b: b["checkpoint_id"]),
        Column("kind", lambda b: "incremental" if ext["incremental"] else "full"),
        Column("created", lambda b: human_time(b["created_at"])),
        Column("finished", lambda b: human_time(ext["finished_at"])),
        Column("disks", lambda b: human_bytes(b["source_bytes"]) if "source_bytes" in b else "-"),
        Column("stored", lambda b: human_bytes(b["stored_bytes"]) if "stored_bytes" in b else "-"),
        Column("average speed", lambda b: human_rate(ext["average_speed"] * 1024) if ext["average_speed"] else "-"),
        Column("description", lambda b: b["description"] or "-"),
    ]
    if ext["fail_reason"]:
        fields.append(Column("failed", lambda b: f"{ext['fail_op'] or 'backup'}: {ext['fail_reason']}"))
    if b.get("waiting"):
        fields.append(Column("waiting", lambda b: b["waiting"]))
    for i, vb in enumerate(ext["volume_backups"]):
        fields.append(Column(f"disk {i + 1}", lambda b, vb=vb: (
            f"{vb['source_volume_name'] or vb['source_volume_id']} ({vb['source_volume_id']}): "
            f"{human_bytes(_gib(vb['source_volume_size']))}, {human_bytes(vb['size'] * MIB)} stored (rounded up to MiB), "
            f"{'incremental' if vb['incremental'] else 'full'}, {vb['status']}")))
    return fields


@click.command("list")
@click.option("--project", default=None, help="only this project's backups (default: every project)")
@click.option("--server", default=None, help="only backups of this server (id)")
@click.option("--status", default=None, help="protecting, available, error, deleting, ... (deleted ones only so)")
@click.option("--policy", "policy_id", default=None, help="only backups made by this policy (id)")
@click.option("--sort", default=None, show_default="created_at:desc", help="e.g. name:asc,created_at:desc")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@output_options
@pass_ctx
def backup_list(ctx: Ctx, project, server, status, policy_id, sort, limit, fmt, as_json, columns) -> None:
    """List backups (checkpoint_items), newest first."""
    from opencsbs.service import checkpoint_items

    fmt = chosen_format(fmt, as_json)
    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            rows = remote.backups({"resource_id": server, "status": status, "policy_id": policy_id, "sort": sort,
                                   "limit": limit})
        return emit(rows, BACKUP_COLUMNS, fmt, columns)
    query = checkpoint_items.ItemQuery(status=status, resource_id=server, policy_id=policy_id,
                                       all_tenants=project is None)
    runtime = _runtime(ctx)
    try:
        with csbs_errors():
            rows = [_exact(runtime, row)
                    for row in checkpoint_items.list_items(runtime, project or "", query, sort=sort, limit=limit)]
    finally:
        runtime.close()
    emit(rows, BACKUP_COLUMNS, fmt, columns)


def _find_backup(runtime, item_id: str) -> dict:
    """The API's body of backup ``item_id`` (of any project), with ``project_id`` and the exact
    ``source_bytes``/``stored_bytes``; exits ``backup '<id>' not found``."""
    from opencsbs.core.errors import CSBSError
    from opencsbs.service import checkpoint_items, workers

    try:
        body = checkpoint_items.get_item(runtime, "", item_id, all_tenants=True)
    except CSBSError:
        raise click.ClickException(f"backup '{item_id}' not found (opencsbs backup list shows them)") from None
    return _waiting(_exact(runtime, body), workers.backup_job(runtime, None, body["id"]))


def _waiting(body: dict, job: dict | None) -> dict:
    """``body`` with ``waiting`` (why no live worker runs its job, docs/engine.md "Placement") when it waits."""
    return {**body, "waiting": job["waiting"]} if job is not None and job["waiting"] else body


def _exact(runtime, body: dict) -> dict:
    """The API's body of a backup plus its ``project_id`` and exact ``source_bytes``/``stored_bytes`` (the API's
    ``size`` is in MiB, rounded up)."""
    from opencsbs.service import checkpoint_items

    state = checkpoint_items.find_item(runtime, body["id"])
    if state is None:
        return body
    return {**body, "project_id": state.project_id, "source_bytes": state.source_bytes,
            "stored_bytes": state.stored_bytes}


@click.command("show")
@click.argument("checkpoint_item_id")
@click.option("--project", default=None, help="the backup's project (needed with --url only)")
@output_options
@pass_ctx
def backup_show(ctx: Ctx, checkpoint_item_id, project, fmt, as_json, columns) -> None:
    """Show one backup (by its checkpoint_item id, or the id of its checkpoint): its disks, sizes and outcome."""
    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            body = remote.backup(checkpoint_item_id)
        return emit(body, _backup_fields(body), chosen_format(fmt, as_json), columns)
    runtime = _runtime(ctx)
    try:
        body = _find_backup(runtime, checkpoint_item_id)
    finally:
        runtime.close()
    emit(body, _backup_fields(body), chosen_format(fmt, as_json), columns)


@click.command("delete")
@click.argument("checkpoint_item_ids", nargs=-1, required=True)
@click.option("--project", default=None, help="the backups' project (needed with --url only)")
@pass_ctx
def backup_delete(ctx: Ctx, checkpoint_item_ids, project) -> None:
    """Delete backups: they read 'deleting' at once and the service's workers drop their data (a legal hold or a
    retention lock refuses it, docs/locks.md). The bank's space comes back with the next 'opencsbs bank gc'."""
    from opencsbs.service import backups

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            for item_id in checkpoint_item_ids:
                body = remote.backup(item_id)
                remote.delete_backup(body)
                click.echo(f"backup {body['id']} ({body['name']}): deleting")
        return
    runtime = _runtime(ctx)
    try:
        for item_id in checkpoint_item_ids:
            body = _find_backup(runtime, item_id)
            with csbs_errors():
                job = backups.delete_backup(runtime, body["project_id"], body["id"])
            click.echo(f"backup {body['id']} ({body['name']}): deleting (job {job})")
    finally:
        runtime.close()


# --- restores -----------------------------------------------------------------------------------------------

RESTORE_COLUMNS = [
    Column("ID", lambda r: r["id"]),
    Column("BACKUP", lambda r: r["checkpoint_item_id"]),
    Column("TARGET", lambda r: r["target_server_id"]),
    Column("STATUS", lambda r: r["status"]),
    Column("PROGRESS", lambda r: f"{r['progress']}%"),
    Column("CREATED", lambda r: human_time(r["created_at"])),
    Column("FINISHED", lambda r: human_time(r["finished_at"])),
]


def _restore_fields(r: dict) -> list[Column]:
    fields = [
        Column("id", lambda r: r["id"]),
        Column("status", lambda r: r["status"]),
        Column("progress", lambda r: f"{r['progress']}%"),
        Column("backup", lambda r: r["checkpoint_item_id"]),
        Column("checkpoint", lambda r: r["checkpoint_id"]),
        Column("target", lambda r: r["target_server_id"]),
        Column("project", lambda r: r["project_id"]),
        Column("power on", lambda r: bool((r.get("parameters") or {}).get("power_on", True))),
        Column("created", lambda r: human_time(r["created_at"])),
        Column("finished", lambda r: human_time(r["finished_at"])),
    ]
    fields.append(Column("target status", _resources_status))
    if r.get("waiting"):
        fields.append(Column("waiting", lambda r: r["waiting"]))
    return fields


def _resources_status(r: dict) -> str:
    """``<id>: <status>[ (<reason>)]`` per resource of ``resources_status``/``resources_reason``."""
    reasons = r.get("resources_reason") or {}
    parts = []
    for resource, status in sorted((r.get("resources_status") or {}).items()):
        why = reasons.get(resource)
        parts.append(f"{resource}: {status}" + (f" ({why})" if why else ""))
    return "; ".join(parts) or "-"


@click.command("list")
@click.option("--project", default=None, help="only this project's restores (default: every project)")
@click.option("--backup", "checkpoint_item_id", default=None, help="only restores of this backup (checkpoint_item)")
@click.option("--server", default=None, help="only restores onto this server")
@click.option("--status", type=click.Choice(["in_progress", "success", "error"]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@output_options
@pass_ctx
def restore_list(ctx: Ctx, project, checkpoint_item_id, server, status, limit, fmt, as_json, columns) -> None:
    """List restores, newest first (local mode only: the CSBS API has no list of restores)."""
    from opencsbs.service import restores

    runtime = _runtime(ctx)
    try:
        with csbs_errors():
            rows = restores.list_restores(runtime, project, checkpoint_item_id=checkpoint_item_id,
                                          target_server_id=server, status=status, limit=limit)
    finally:
        runtime.close()
    emit(rows, RESTORE_COLUMNS, chosen_format(fmt, as_json), columns)


def remote_restore(body: dict) -> dict:
    """A restore as the API answers it, plus the ``checkpoint_item_id``/``target_server_id`` the local record has
    (taken from its ``parameters``)."""
    params = body.get("parameters") or {}
    return {**body, "checkpoint_item_id": body.get("checkpoint_item_id") or params.get("checkpoint_item_id"),
            "target_server_id": body.get("target_server_id") or (params.get("targets") or {}).get("server_id")
            or body.get("restore_target")}


@click.command("show")
@click.argument("restore_id")
@click.option("--project", default=None, help="the restore's project (needed with --url only)")
@output_options
@pass_ctx
def restore_show(ctx: Ctx, restore_id, project, fmt, as_json, columns) -> None:
    """Show one restore: its status, and per disk what happened."""
    from opencsbs.service import restores, workers

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            body = remote_restore(remote.restore(restore_id))
        return emit(body, _restore_fields(body), chosen_format(fmt, as_json), columns)
    runtime = _runtime(ctx)
    try:
        body = restores.find_restore(runtime, restore_id)
        if body is not None:
            body = _waiting(body, workers.restore_job(runtime, None, restore_id))
    finally:
        runtime.close()
    if body is None:
        raise click.ClickException(f"restore '{restore_id}' not found (opencsbs restore list shows them)")
    emit(body, _restore_fields(body), chosen_format(fmt, as_json), columns)


# --- check --------------------------------------------------------------------------------------------------

CHECK_COLUMNS = [
    Column("SERVER", lambda v: v["resource_id"]),
    Column("NAME", lambda v: v["name"] or "-"),
    Column("PROJECT", lambda v: v["project_id"] or "-"),
    Column("PROTECTABLE", lambda v: v["result"]),
    Column("POLICY", lambda v: v["policy_name"] or "-"),
    Column("REASON", lambda v: f"{v['error_code']}: {v['error_msg']}" if v["error_code"] else v["error_msg"] or "-"),
]


@click.command("check")
@click.argument("server_ids", nargs=-1, required=True)
@click.option("--project", default=None, help="the servers' project (needed with --url only)")
@output_options
@pass_ctx
def check(ctx: Ctx, server_ids, project, fmt, as_json, columns) -> None:
    """Whether each server can be backed up now (the API's check_protectable), with the reason when not and the
    policy it is bound to. Exits 1 when a server does not exist."""
    from opencsbs.auth.base import Principal
    from opencsbs.core import codes
    from opencsbs.service import protectable
    from opencsbs.service.servers import find_server

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            verdicts = remote.check(list(dict.fromkeys(server_ids)))
            missing = [v["resource_id"] for v in verdicts if v.get("error_code") == codes.SERVER_NOT_FOUND.code]
            # check_protectable answers neither the servers' names nor their policy's: the names come from the
            # project's server list (its cells read "-" when it cannot be had), the policy cells read "-"
            found = [v["resource_id"] for v in verdicts if v["resource_id"] not in missing]
            names = remote.server_names(found) if found else {}
        rows = [{**v, "name": names.get(v["resource_id"]), "project_id": remote.project, "policy_id": None,
                 "policy_name": None, "error_code": v.get("error_code"), "error_msg": v.get("error_msg")}
                for v in verdicts]
        return _emit_checks(rows, missing, fmt, as_json, columns)
    runtime = _runtime(ctx)
    rows: list[dict] = []
    missing = []
    try:
        ids = list(dict.fromkeys(server_ids))
        servers = {sid: find_server(runtime, sid) for sid in ids}
        states = protectable.protection_states(runtime, ids)
        verdicts = {}
        by_project: dict[str, list] = {}
        for sid, server in servers.items():
            if server is not None:
                by_project.setdefault(server.project_id, []).append((sid, server.resource_type))
        for project_id, items in by_project.items():
            with csbs_errors():
                for verdict in protectable.check_protectable(runtime, Principal.operator(project_id, CLI_USER),
                                                             project_id, items):
                    verdicts[verdict.resource_id] = verdict
        for sid in ids:
            server, verdict, state = servers[sid], verdicts.get(sid), states.get(sid)
            if server is None:
                missing.append(sid)
                rows.append({"resource_id": sid, "resource_type": None, "name": None, "project_id": None,
                             "result": False, "error_code": None, "error_msg": "server not found",
                             "policy_id": None, "policy_name": None})
                continue
            rows.append({"resource_id": sid, "resource_type": verdict.resource_type, "name": server.name,
                         "project_id": server.project_id, "result": verdict.result,
                         "error_code": verdict.error_code, "error_msg": verdict.error_msg,
                         "policy_id": state.policy_id if state else None,
                         "policy_name": state.policy_name if state else None})
    finally:
        runtime.close()
    _emit_checks(rows, missing, fmt, as_json, columns)


def _emit_checks(rows: list[dict], missing: list[str], fmt, as_json, columns) -> None:
    """Print the verdicts ``rows``; exit 1 naming the ``missing`` servers (those that do not exist), if any."""
    emit(rows, CHECK_COLUMNS, chosen_format(fmt, as_json), columns)
    if missing:
        raise click.ClickException(f"no such server: {', '.join(missing)}")
