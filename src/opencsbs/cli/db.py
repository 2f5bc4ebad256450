"""``opencsbs db upgrade``: the database schema."""

from __future__ import annotations

import click

from opencsbs.cli._common import Ctx, config_option, data_dir_option, pass_ctx


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@data_dir_option
@config_option
@pass_ctx
def db_upgrade(ctx: Ctx) -> None:
    """Migrate the database to the newest schema."""
    from opencsbs.db.migrate import upgrade

    settings = ctx.settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    click.echo("database is at the newest schema")
