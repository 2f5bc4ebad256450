"""``opencsbs restore CHECKPOINT_ITEM``: restore one backup onto its server (or another), with a progress bar;
``opencsbs restore cancel RESTORE``: cancel a running restore."""

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
    workers_warning,
)
from opencsbs.cli.remote import remote_of
from opencsbs.core.lifecycle import RestoreStatus


class RestoreGroup(DefaultGroup):
    default = "now"


@click.group(cls=RestoreGroup)
def restore() -> None:
    """Restore a backup (``opencsbs restore CHECKPOINT_ITEM [--target SERVER] [--no-wait] [--no-power-on]``: the
    options below), or list, show and cancel restores (the commands below)."""


def _reason(reasons: dict | None) -> str:
    """The restore's per-server reasons as one line (``resources_reason`` holds one per target server)."""
    return "; ".join(str(v) for v in (reasons or {}).values()) or "no reason recorded"


@restore.command("now", hidden=True)
@click.argument("checkpoint_item_id")
@click.option("--target", "target_id", default=None, help="server to restore onto (default: the backed-up one)")
@click.option("--power-on/--no-power-on", default=True, show_default=True, help="start the server afterwards")
@click.option("--wait/--no-wait", default=True, show_default=True, help="run the restore here (client mode: follow "
              "it through the API) with a progress bar (Ctrl-C: the restore goes on in the service; exit 130)")
@click.option("--project", default=None, help="the backup's project (needed with --url only)")
@pass_ctx
def restore_now(ctx: Ctx, checkpoint_item_id: str, target_id, power_on: bool, wait: bool, project) -> None:
    """Restore a backup onto its server (or --target): each disk backup onto the same disk when the target has it,
    otherwise onto the target's disks in device order."""
    from opencsbs.service import checkpoint_items, restores

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            return _restore_remote(remote, checkpoint_item_id, target_id, power_on, wait)
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
            status = follow(runtime, lambda: restores.restore_progress(runtime, rs["id"])[:2], "restoring",
                            target_id=rs["id"], interrupted=(
                                f"interrupted: the restore goes on in the service (restore {rs['id']}); follow it "
                                f"with `opencsbs restore show {rs['id']}`, cancel it with `opencsbs restore "
                                f"cancel {rs['id']}`; without a running `opencsbs serve` or `opencsbs worker` it "
                                "resumes when one starts"))
            if status != RestoreStatus.SUCCESS:
                raise click.ClickException(
                    f"restore ended {status}: {_reason(restores.restore_progress(runtime, rs['id'])[2])}")
        elif (warning := workers_warning(runtime)) is not None:
            click.echo(warning, err=True)
        click.echo(rs["id"])
    finally:
        runtime.close()


def _interrupted(restore_id: str) -> str:
    return (f"interrupted: the restore goes on in the service (restore {restore_id}); follow it with "
            f"`opencsbs restore show {restore_id}`, cancel it with `opencsbs restore cancel {restore_id}`")


def _restore_remote(remote, checkpoint_item_id: str, target_id, power_on: bool, wait: bool) -> None:
    """``restore ITEM`` through the API: create the restore, then (``--wait``) follow its status."""
    item = remote.backup(checkpoint_item_id)
    rs = remote.start_restore(item, target_id, power_on)
    click.echo(f"restore {rs['id']} of {checkpoint_item_id} onto {target_id or item['resource_id']} started",
               err=True)
    if wait:
        status = follow(None, lambda: _remote_status(remote, rs["id"]), "restoring",
                        interrupted=_interrupted(rs["id"]))
        if status != RestoreStatus.SUCCESS:
            raise click.ClickException(f"restore ended {status}: {_reason(remote.restore(rs['id']).get('resources_reason'))}")
    click.echo(rs["id"])


def _remote_status(remote, restore_id: str) -> tuple[str, int]:
    body = remote.restore(restore_id)
    return body["status"], int(body.get("progress") or 0)


@restore.command("cancel")
@click.argument("restore_id")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait until the restore has ended")
@click.option("--project", default=None, help="the restore's project (needed with --url only)")
@pass_ctx
def restore_cancel(ctx: Ctx, restore_id: str, wait: bool, project) -> None:
    """Cancel a running restore: it stops before its next chunk write and ends ``error``, saying per disk what
    was written and the server's power state. Without a running serve/worker the cancel is carried out here."""
    from opencsbs.auth.base import Principal
    from opencsbs.service import jobs, restores

    remote = remote_of(ctx, project)
    if remote is not None:
        with remote:
            remote.ext("POST", f"/restores/{restore_id}/cancel")
            click.echo(f"cancel of restore {restore_id} requested", err=True)
            if wait:
                status = follow(None, lambda: _remote_status(remote, restore_id), "cancelling")
                click.echo(f"restore {restore_id} ended {status}: "
                           f"{_reason(remote.restore(restore_id).get('resources_reason'))}", err=True)
        return
    runtime = ctx.runtime()
    try:
        project_id = jobs.restore_project(runtime, restore_id)
        if project_id is None:
            raise click.ClickException(f"no restore {restore_id}")
        with csbs_errors():
            jobs.cancel_restore(runtime, Principal.operator(project_id, CLI_USER), project_id, restore_id)
        click.echo(f"cancel of restore {restore_id} requested", err=True)
        if wait:
            status = finish_cancel(runtime, "restore", restore_id,
                                   lambda: restores.restore_progress(runtime, restore_id)[:2])
            click.echo(f"restore {restore_id} ended {status}: "
                       f"{_reason(restores.restore_progress(runtime, restore_id)[2])}", err=True)
    finally:
        runtime.close()
