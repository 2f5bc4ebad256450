"""``opencsbs backup SERVER``: back up one server now, optionally following the job to its end."""

from __future__ import annotations

import click

from opencsbs.cli._common import Ctx, csbs_errors, follow, operator_of, pass_ctx, server_refusals
from opencsbs.core.lifecycle import ItemStatus


#: what ``opencsbs backup list`` (or a typo) is told besides "not found"
NOT_A_SERVER = (" (opencsbs backup takes the id of a server to back up, or one of list, show, delete; "
                "backups are listed by opencsbs backup list)")


@click.command()
@click.argument("server_id")
@click.option("--name", default=None, help="backup name (default manualbk_xxxx)")
@click.option("--description", default=None)
@click.option("--full", is_flag=True, help="read every disk completely instead of only what changed")
@click.option("--wait", is_flag=True, help="run the backup here and show its progress until it ends")
@pass_ctx
def backup(ctx: Ctx, server_id: str, name, description, full: bool, wait: bool) -> None:
    """Back up a server (all of its disks, crash-consistently). Prints the checkpoint_item id."""
    from opencsbs.service import backups, checkpoint_items
    from opencsbs.service.servers import find_server

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
            status = follow(runtime, read, "backing up")
            done = checkpoint_items.find_item(runtime, item.id)
            if status != ItemStatus.AVAILABLE:
                raise click.ClickException(f"backup ended {status}: {done.fail_reason}")
            click.echo(f"available: {done.source_bytes} bytes of disk, {done.stored_bytes} bytes stored", err=True)
        click.echo(item.id)
    finally:
        runtime.close()
