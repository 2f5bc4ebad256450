"""``opencsbs sandbox ...``: the built-in sandbox cloud (load, list, set, delete, write, hash)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from opencsbs.cli._common import Ctx, config_option, data_dir_option, pass_ctx
from opencsbs.core.facts import NOVA_STATUSES, NOVA_TASK_STATES


@click.group()
def sandbox() -> None:
    """The built-in sandbox cloud: load, list, change and delete servers and volumes."""


def _sandbox_run(ctx: Ctx, fn):
    """``fn(runtime)`` (a use case of ``service.sandbox``); an ``InventoryError`` exits with its reason."""
    from opencsbs.clouds.sandbox.inventory import InventoryError

    runtime = ctx.runtime()
    try:
        return fn(runtime)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        runtime.close()


@sandbox.command("load")
@data_dir_option
@config_option
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False))
@pass_ctx
def sandbox_load(ctx: Ctx, inventory: str) -> None:
    """Load (upsert) an inventory YAML file."""
    from opencsbs.service import sandbox as cloud

    counts = _sandbox_run(ctx, lambda rt: cloud.load(rt, Path(inventory)))
    click.echo(f"loaded {counts['servers']} servers, {counts['volumes']} volumes")


@sandbox.command("list")
@data_dir_option
@config_option
@click.option("--project", default=None)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def sandbox_list(ctx: Ctx, project: str | None, as_json: bool) -> None:
    """List servers with their volumes."""
    from opencsbs.service import sandbox as cloud

    servers = _sandbox_run(ctx, lambda rt: cloud.servers(rt, project))
    if as_json:
        from dataclasses import asdict

        click.echo(json.dumps([asdict(s) for s in servers], indent=2))
        return
    for s in servers:
        task = f" task={s.task_state}" if s.task_state else ""
        click.echo(f"{s.project_id}  {s.id}  {s.name:<16} {s.resource_type:<28} {s.status}{task} az={s.availability_zone}")
        for v in s.volumes:
            flags = ",".join(f for f, on in (("boot", v.bootable), ("shareable", v.shareable)) if on)
            kinds = "".join(f" {label}={value}" for label, value in (("type", v.volume_type), ("service", v.service_type))
                            if value)
            click.echo(f"      {v.device:<10} {v.id}  {v.size_gb} GiB {flags}{kinds}")


@sandbox.command("set")
@data_dir_option
@config_option
@click.argument("server_id")
@click.option("--status", default=None, type=click.Choice(NOVA_STATUSES, case_sensitive=False),
              help="Nova status (any case)")
@click.option("--task-state", default=None, type=click.Choice(("",) + NOVA_TASK_STATES, case_sensitive=False),
              help="Nova task state; '' clears it")
@click.option("--az", "availability_zone", default=None)
@click.option("--name", default=None)
@pass_ctx
def sandbox_set(ctx: Ctx, server_id: str, **changes) -> None:
    """Change a server's status, task state, AZ or name."""
    from opencsbs.service import sandbox as cloud

    _sandbox_run(ctx, lambda rt: cloud.change_server(rt, server_id, **changes))
    click.echo(f"server {server_id} updated")


@sandbox.command("delete")
@data_dir_option
@config_option
@click.argument("resource_id")
@pass_ctx
def sandbox_delete(ctx: Ctx, resource_id: str) -> None:
    """Delete a server (its volumes stay, detached) or a volume (and its data)."""
    from opencsbs.service import sandbox as cloud

    kind = _sandbox_run(ctx, lambda rt: cloud.delete(rt, resource_id))
    click.echo(f"{kind} {resource_id} deleted")


@sandbox.command("write")
@data_dir_option
@config_option
@click.argument("volume_id")
@click.option("--offset", type=int, default=0, show_default=True, help="byte offset")
@click.option("--from", "source", type=click.File("rb"), default="-", help="file to copy in (default stdin)")
@pass_ctx
def sandbox_write(ctx: Ctx, volume_id: str, offset: int, source) -> None:
    """Write bytes into a sandbox volume."""
    from opencsbs.service import sandbox as cloud

    n = _sandbox_run(ctx, lambda rt: cloud.write(rt, volume_id, offset, source))
    click.echo(f"wrote {n} bytes to {volume_id} at offset {offset}")


@sandbox.command("hash")
@data_dir_option
@config_option
@click.argument("volume_id")
@pass_ctx
def sandbox_hash(ctx: Ctx, volume_id: str) -> None:
    """Print the SHA-256 of every byte of a sandbox volume."""
    from opencsbs.service import sandbox as cloud

    click.echo(_sandbox_run(ctx, lambda rt: cloud.digest(rt, volume_id)))
