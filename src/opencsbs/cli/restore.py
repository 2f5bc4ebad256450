"""``opencsbs restore CHECKPOINT_ITEM``: restore one backup onto its server (or another), with a progress bar."""

from __future__ import annotations

import click

from opencsbs.cli._common import Ctx, csbs_errors, follow, operator_of, pass_ctx
from opencsbs.core.lifecycle import RestoreStatus


@click.command()
@click.argument("checkpoint_item_id")
@click.option("--target", "target_id", default=None, help="server to restore onto (default: the backed-up one)")
@click.option("--power-on/--no-power-on", default=True, show_default=True, help="start the server afterwards")
@click.option("--wait/--no-wait", default=True, show_default=True, help="run the restore here with a progress bar")
@pass_ctx
def restore(ctx: Ctx, checkpoint_item_id: str, target_id, power_on: bool, wait: bool) -> None:
    """Restore a backup onto its server (or --target): each disk backup onto the same disk when the target has it,
    otherwise onto the target's disks in device order."""
    from opencsbs.service import checkpoint_items, restores

    runtime = ctx.runtime()
    try:
        item = checkpoint_items.find_item(runtime, checkpoint_item_id)
        if item is None:
            raise click.ClickException(f"no checkpoint_item {checkpoint_item_id}")
        hint = "" if target_id else (" (the backed-up server is gone: restore onto another server with "
                                     "--target SERVER_ID)")
        target_id = target_id or item.resource_id
        principal = operator_of(runtime, target_id, hint)
        plan = restores.plan_onto_server(runtime, item, target_id)
        with csbs_errors():
            rs = restores.create_restore(runtime, principal, item.project_id, checkpoint_id=item.checkpoint_id,
                                         request=plan, power_on=power_on)
        click.echo(f"restore {rs['id']} of {checkpoint_item_id} onto {target_id} started", err=True)
        if wait:
            status = follow(runtime, lambda: restores.restore_progress(runtime, rs["id"])[:2], "restoring")
            if status != RestoreStatus.SUCCESS:
                reason = restores.restore_progress(runtime, rs["id"])[2]
                raise click.ClickException(f"restore ended {status}: {reason}")
        click.echo(rs["id"])
    finally:
        runtime.close()
