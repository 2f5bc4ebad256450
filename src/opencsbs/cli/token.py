"""``opencsbs token create``: local tokens (auth.mode = local)."""

from __future__ import annotations

import click

from opencsbs.cli._common import Ctx, config_option, database_location, pass_ctx


@click.group()
def token() -> None:
    """Local tokens (auth.mode = local)."""


@token.command("create")
@click.option("--project", default=None, help="project id the token is scoped to (required but with --cloud-admin)")
@click.option("--role", type=click.Choice(["reader", "member", "admin"]), default="member", show_default=True)
@click.option("--cloud-admin", is_flag=True,
              help="a system-scoped admin token (no project) that may act on every project (rule context_is_admin)")
@click.option("--user", default=None, help="user id recorded with the token")
@click.option("--data-dir", "data_dir_opt", type=click.Path(file_okay=False), default=None,
              help="state directory whose database keeps the token")
@config_option
@pass_ctx
def token_create(ctx: Ctx, project: str | None, role: str, cloud_admin: bool, user: str | None,
                 data_dir_opt: str | None) -> None:
    """Create a token; it is printed once, as the last line. An ``admin`` token is admin of its own project only;
    ``--cloud-admin`` makes one for every project."""
    from opencsbs.service.tokens import create_local_token

    if not cloud_admin and not project:
        raise click.UsageError("--project is required (or --cloud-admin for a token of every project)")
    if data_dir_opt:
        ctx.data_dir = data_dir_opt
    runtime = ctx.runtime()
    try:
        value = create_local_token(runtime, project, role, user, cloud_admin=cloud_admin)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        runtime.close()
    what = "cloud-admin token (every project)" if cloud_admin else f"token for project {project} with role {role}"
    click.echo(f"{what}, stored in {database_location(runtime.settings)} (store it: it is not shown again):",
               err=True)
    click.echo(value)
