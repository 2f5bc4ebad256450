"""``opencsbs backup SERVER``: back up one server now, optionally following the job to its end;
``opencsbs backup cancel CHECKPOINT_ITEM``: cancel a running backup."""

from __future__ import annotations

import click

from opencsbs.cli._common import (
    CLI_USER,
    Ctx,
    DefaultGroup,
    csbs_errors,
    finish_cancel,
    follow,
    operator_of,
    pass_ctx,
    server_refusals,
    workers_warning,
)
from opencsbs.cli.output import human_bytes
from opencsbs.cli.remote import remote_of
from opencsbs.core.lifecycle import ItemStatus

#: what ``opencsbs backup list`` (or a typo) is told besides "not found"
NOT_A_SERVER = (" (opencsbs backup takes the id of a server to back up, or one of list, show, delete; "
                "backups are listed by opencsbs backup list)")


class BackupGroup(DefaultGroup):
    default = "now"


@click.group(cls=BackupGroup)
def backup() -> None:
    """Back up a server now (``opencsbs backup SERVER [--wait]``: the options below), or list, show, delete and
    cancel backups (the commands below)."""


@backup.command("now", hidden=True)
@click.argument("server_id")
@click.option("--name", default=None, help="backup name (default manualbk_xxxx)")
@click.option("--description", default=None)
@click.option("--full", is_flag=True, help="read every disk completely instead of only what changed")
@click.option("--wait", is_flag=True, help="run the backup here (client mode: follow it through the API) and "
              "show its progress until it ends (Ctrl-C: the backup goes on in the service; exit 130)")
@click.option("--project", default=None, help="the server's project (needed with --url only)")
@pass_ctx
def backup_now(ctx: Ctx, server_id: str, name, description, full: bool, wait: bool, project) -> None:
    """Back up a server (all of its disks, crash-consistently). Prints the checkpoint_item id."""
    from opencsbs.service import backups, checkpoint_items
    from opencsbs.service.servers import find_server

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            return _backup_remote(remote, server_id, name, description, full, wait)
    runtime = ctx.runtime()
    try:
        principal = operator_of(runtime, server_id, NOT_A_SERVER)
        with csbs_errors(lambda _exc: server_refusals(runtime, principal, principal.project_id, [server_id])):
            cp = backups.create_backup(runtime, principal, principal.project_id, server_id, name=name,
                                       description=description, incremental=not full,
                                       resource_type=find_server(runtime, server_id).resource_type)
        item = checkpoint_items.item_of_checkpoint(runtime, cp["id"])
        click.echo(f"backup {item.name}: checkpoint {cp['id']}, checkpoint_item {item.id}", err=True)
        if wait:
            def read():
                state = checkpoint_items.find_item(runtime, item.id)
                return state.status, state.progress
            status = follow(runtime, read, "backing up", target_id=item.id, interrupted=(
                f"interrupted: the backup goes on in the service (checkpoint_item {item.id}); follow it with "
                f"`opencsbs backup show {item.id}`, cancel it with `opencsbs backup cancel {item.id}`; without "
                "a running `opencsbs serve` or `opencsbs worker` it resumes when one starts"))
            done = checkpoint_items.find_item(runtime, item.id)
            if status != ItemStatus.AVAILABLE:
                raise click.ClickException(f"backup ended {status}: {done.fail_reason}")
            click.echo(f"available: {human_bytes(done.source_bytes)} of disk, {human_bytes(done.stored_bytes)} "
                       "stored", err=True)
        elif (warning := workers_warning(runtime)) is not None:
            click.echo(warning, err=True)
        click.echo(item.id)
    finally:
        runtime.close()


def _interrupted(item_id: str) -> str:
    return (f"interrupted: the backup goes on in the service (checkpoint_item {item_id}); follow it with "
            f"`opencsbs backup show {item_id}`, cancel it with `opencsbs backup cancel {item_id}`")


def _backup_remote(remote, server_id: str, name, description, full: bool, wait: bool) -> None:
    """``backup SERVER`` through the API: protect, then (``--wait``) follow the checkpoint_item's status."""
    protect = {k: v for k, v in (("backup_name", name), ("description", description)) if v is not None}
    protect["incremental"] = not full
    item = remote.protect(server_id, protect)
    click.echo(f"backup {item['name']}: checkpoint {item['checkpoint_id']}, checkpoint_item {item['id']}",
               err=True)
    if wait:
        status = follow(None, lambda: _remote_status(remote, item["id"]), "backing up",
                        interrupted=_interrupted(item["id"]))
        done = remote.backup(item["id"])
        if status != ItemStatus.AVAILABLE:
            raise click.ClickException(f"backup ended {status}: {done['extend_info'].get('fail_reason') or ''}")
        click.echo(f"available: {human_bytes(done['source_bytes'])} of disk, {human_bytes(done['stored_bytes'])} "
                   "stored (the API's sizes: disks in GiB, stored rounded up to MiB)", err=True)
    click.echo(item["id"])


def _remote_status(remote, item_id: str) -> tuple[str, int]:
    body = remote.backup(item_id)
    return body["status"], int(body["extend_info"].get("progress") or 0)


@backup.command("cancel")
@click.argument("checkpoint_item_id")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait until the backup has ended")
@click.option("--project", default=None, help="the backup's project (needed with --url only)")
@pass_ctx
def backup_cancel(ctx: Ctx, checkpoint_item_id: str, wait: bool, project) -> None:
    """Cancel a running backup: it ends ``error`` ("cancelled by ..."), its snapshot and partial bank data are
    dropped and the server is free again. Without a running serve/worker the cancel is carried out here."""
    from opencsbs.auth.base import Principal
    from opencsbs.service import checkpoint_items, jobs

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            remote.ext("POST", f"/checkpoint_items/{checkpoint_item_id}/cancel")
            click.echo(f"cancel of backup {checkpoint_item_id} requested", err=True)
            if wait:
                status = follow(None, lambda: _remote_status(remote, checkpoint_item_id), "cancelling")
                reason = remote.backup(checkpoint_item_id)["extend_info"].get("fail_reason") or ""
                click.echo(f"backup {checkpoint_item_id} ended {status}: {reason}".rstrip(": "), err=True)
        return
    runtime = ctx.runtime()
    try:
        item = checkpoint_items.find_item(runtime, checkpoint_item_id)
        if item is None:
            raise click.ClickException(f"no checkpoint_item {checkpoint_item_id}")
        with csbs_errors():
            jobs.cancel_backup(runtime, Principal.operator(item.project_id, CLI_USER), item.project_id,
                                  checkpoint_item_id)
        click.echo(f"cancel of backup {checkpoint_item_id} requested", err=True)
        if wait:
            status = finish_cancel(runtime, "backup", checkpoint_item_id, lambda: _item_status(runtime, item.id))
            done = checkpoint_items.find_item(runtime, item.id)
            click.echo(f"backup {checkpoint_item_id} ended {status}: {done.fail_reason or ''}".rstrip(": "),
                       err=True)
    finally:
        runtime.close()


def _item_status(runtime, item_id: str) -> tuple[str, int]:
    from opencsbs.service import checkpoint_items

    state = checkpoint_items.find_item(runtime, item_id)
    return state.status, state.progress
